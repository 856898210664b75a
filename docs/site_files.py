"""MkDocs hook: build the site from the repository's own layout, so the relative links that work on
GitHub work in the site unchanged. README.md is the home page; docs/*.md, experiments/**/README.md
and the images beside them keep their repository paths."""
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ("README.md", "docs/*.md", "experiments/**/README.md", "experiments/**/*.png")


def on_files(files: Files, config) -> Files:
    kept = [f for f in files if f.src_dir != config.docs_dir]  # the theme's files, not docs_dir's walk
    paths = sorted({path.relative_to(ROOT).as_posix() for pattern in PATTERNS for path in ROOT.glob(pattern)})
    return Files(kept + [File(path, src_dir=str(ROOT), dest_dir=config.site_dir,
                              use_directory_urls=config.use_directory_urls) for path in paths])
