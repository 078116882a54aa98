"""What several test modules share: paths, flag parsing, tiny models and runs, files written in
real formats (torch.save files, CIFAR archives, image folders, Tiny ImageNet zips), full disks.

The top conftest puts tests/ on sys.path, so tests import these as `from helpers.runs import
smoke_config`; no test module imports another.
"""
