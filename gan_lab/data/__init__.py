"""LightningDataModules: on-disk formats, decoded-once caches, batches in [-1, 1] on the device."""
from gan_lab.data.augment import Augment
from gan_lab.data.base import ImageDataModule
from gan_lab.data.celeba import CelebA
from gan_lab.data.cifar import CIFAR10
from gan_lab.data.digits import Digits
from gan_lab.data.disk import DeviceLoader, DiskImageDataModule, FileImageDataModule
from gan_lab.data.folders import ImageFolder, Monet, Pokemon
from gan_lab.data.mnist import MNIST
from gan_lab.data.throughput import measure_throughput
from gan_lab.data.wikiart import WikiArt

__all__ = ["Augment", "CIFAR10", "CelebA", "DeviceLoader", "Digits", "DiskImageDataModule",
           "FileImageDataModule", "ImageDataModule", "ImageFolder", "MNIST", "Monet", "Pokemon", "WikiArt",
           "measure_throughput"]
