"""Build script: the package, plus the native extension once it exists."""

from setuptools import setup

setup()
