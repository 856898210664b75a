"""``gan_lab.fetch`` against a local HTTP server on 127.0.0.1 serving archives built from the test
datasets in each dataset's real archive format; no test reaches any other address."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import tarfile
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from gan_lab.errors import UserError
from gan_lab.fetch import DATASETS, RECORD, fetch
from gan_lab.run import train
from tests.conftest import refused, run_main
from tests.datasets import make_celeba, make_cifar10, make_mnist, make_wikiart


class Server:
    """Serves ``files`` (name -> bytes) with HTTP range requests; ``cut[name] = n`` ends the first
    response for ``name`` after n bytes. ``requests`` lists (name, Range header) of every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                data, start = server.files[name], 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if name in server.cut:
                    body = body[:server.cut.pop(name)]
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def downloads(self) -> list[str]:
        return [name for name, _ in self.requests]


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch):
    """No test here may reach beyond 127.0.0.1: any other connection fails at once."""
    connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] != "127.0.0.1":
            raise AssertionError(f"a test tried to connect to {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    # a subprocess's urllib goes through a proxy that does not exist, except to 127.0.0.1
    for key in ("http_proxy", "https_proxy"):
        monkeypatch.setenv(key, "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def zipped(folder: Path, *entries: str) -> bytes:
    out = folder / "archive.zip"
    with zipfile.ZipFile(out, "w") as archive:
        for entry in entries:
            for path in sorted((folder / entry).rglob("*")):
                archive.write(path, path.relative_to(folder))
    data = out.read_bytes()
    out.unlink()
    return data


def tar_gz(folder: Path, entry: str) -> bytes:
    out = folder / "archive.tar.gz"
    with tarfile.open(out, "w:gz") as archive:
        archive.add(folder / entry, arcname=entry)
    data = out.read_bytes()
    out.unlink()
    return data


def archives(name: str, src: Path) -> dict[str, bytes]:
    """The files the sources of ``name`` serve, built from the test dataset in their real formats."""
    if name == "mnist":
        make_mnist(src)
        files = {}
        for path in sorted(src.iterdir()):
            files[path.name if path.suffix == ".gz" else path.name + ".gz"] = (
                path.read_bytes() if path.suffix == ".gz" else gzip.compress(path.read_bytes()))
        return files
    if name == "cifar10":
        make_cifar10(src)
        return {"cifar-10-python.tar.gz": tar_gz(src, "cifar-10-batches-py")}
    if name == "celeba":
        make_celeba(src)
        return {"img_align_celeba.zip": zipped(src, "img_align_celeba"),
                "list_eval_partition.txt": (src / "list_eval_partition.txt").read_bytes()}
    make_wikiart(src)
    return {"wikiart.zip": zipped(src, "wikiart"), "wikiart_csv.zip": zipped(src, "WikiArt Dataset")}


def with_checksums(name: str, files: dict[str, bytes]):
    """The dataset's sources with the test files' MD5s where the real files have a published one."""
    dataset = DATASETS[name]()
    sources = tuple(replace(s, md5=hashlib.md5(files[s.name]).hexdigest() if s.md5 else None)
                    for s in dataset.sources)
    return replace(dataset, sources=sources)


@pytest.mark.parametrize("name, choice", [("mnist", "mnist"), ("cifar10", "cifar10"), ("celeba", "celeba"),
                                          ("wikiart", "wikiart_genre")])
def test_a_fetched_dataset_is_read_as_training_reads_it_and_is_not_fetched_twice(server, tmp_path, make_cfg,
                                                                                  name, choice):
    server.files = archives(name, tmp_path / "src")
    root = tmp_path / "data"
    fetched = fetch(name, root, server.url, with_checksums(name, server.files))
    assert sorted(fetched) == sorted(server.files)
    assert not [p for p in root.iterdir() if p.name.startswith(".extracting") or p.suffix in (".zip", ".gz", ".part")
                and name != "mnist"]
    requests = list(server.requests)
    assert fetch(name, root, server.url, with_checksums(name, server.files)) == []
    assert server.requests == requests  # nothing downloaded again
    cfg = make_cfg(f"data={choice}", f"data.root={root}", "trainer.max_batches=1", "data.batch_size=2",
                   "model.generator.width=4", "model.discriminator.width=4")
    if name != "wikiart":
        train(cfg)  # one batch
    else:
        from gan_lab.build import build_datamodule
        assert len(build_datamodule(cfg).dataset("train")) > 0


def test_a_corrupted_archive_is_refused_and_nothing_half_extracted_is_left(server, tmp_path):
    files = archives("cifar10", tmp_path / "src")
    dataset = with_checksums("cifar10", files)
    damaged = bytearray(files["cifar-10-python.tar.gz"])
    damaged[len(damaged) // 2] ^= 0xFF
    server.files = {"cifar-10-python.tar.gz": bytes(damaged)}
    root = tmp_path / "data"
    with refused(f"{server.url}cifar-10-python.tar.gz", hashlib.md5(bytes(damaged)).hexdigest(),
                 hashlib.md5(files["cifar-10-python.tar.gz"]).hexdigest()):
        fetch("cifar10", root, server.url, dataset)
    assert list(root.iterdir()) == []


def test_a_download_cut_in_the_middle_continues_where_it_stopped(server, tmp_path):
    files = archives("cifar10", tmp_path / "src")
    server.files = files
    size = len(files["cifar-10-python.tar.gz"])
    server.cut = {"cifar-10-python.tar.gz": size // 2}
    root = tmp_path / "data"
    dataset = with_checksums("cifar10", files)
    with refused("cifar-10-python.tar.gz", f"{size // 2:,}", f"{size:,}", "fetch again"):
        fetch("cifar10", root, server.url, dataset)
    assert (root / "cifar-10-python.tar.gz.part").stat().st_size == size // 2
    assert fetch("cifar10", root, server.url, dataset) == ["cifar-10-python.tar.gz"]
    assert server.requests[-1] == ("cifar-10-python.tar.gz", f"bytes={size // 2}-")
    assert sorted(p.name for p in (root / "cifar-10-batches-py").iterdir())[0] == "batches.meta"


def test_the_command_fetches_records_a_checksum_and_summarises(server, tmp_path, capsys, monkeypatch):
    """WikiArt publishes no checksum: the first download records one; the summary is what training reads."""
    server.files = archives("wikiart", tmp_path / "src")
    monkeypatch.setenv("GAN_LAB_DATA", str(tmp_path / "data"))
    res = run_main("gan_lab.fetch", "data=wikiart_style", f"fetch.mirror={server.url}", capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "no checksum is published; recorded" in res.stderr and (tmp_path / "data" / "wikiart" / RECORD).is_file()
    assert "gan_lab: fetched wikiart.zip, wikiart_csv.zip" in res.stdout
    assert "wikiart_style: 2 train, 1 val images, 3 class(es)" in res.stdout
    monkeypatch.setenv("GAN_LAB_MIRROR", server.url)
    again = run_main("gan_lab.fetch", "data=wikiart_style", capsys=capsys)
    assert again.returncode == 0 and "is already in" in again.stdout


def test_a_mirror_that_does_not_answer_is_one_sentence_naming_the_url(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    with refused(f"http://127.0.0.1:{port}/train-images-idx3-ubyte.gz", "fetch.mirror="):
        fetch("mnist", tmp_path / "data", f"http://127.0.0.1:{port}/")


def test_a_kaggle_dataset_without_credentials_names_the_page_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    with pytest.raises(UserError) as refused:
        fetch("pokemon", tmp_path / "data" / "pokemon")
    assert DATASETS["pokemon"]().page in str(refused.value)
    assert str(tmp_path / "data" / "pokemon") in str(refused.value)
