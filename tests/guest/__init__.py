"""Tests that boot Debian bookworm's stock 6.1 kernel under qemu (see vm.py and README.md)."""
