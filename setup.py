"""Package layout only; everything else is in pyproject.toml.

The repository keeps schemas/, services/ and infra/ at the top, but they install under the
``framebus`` name (``framebus.schemas`` ...), so nothing generic lands in a user's
site-packages. setuptools cannot express this mapping in pyproject.toml without listing
every subpackage, so it is computed here.
"""

from setuptools import find_packages, setup

MAPPED = ("schemas", "services", "infra")

setup(
    packages=["framebus", *(f"framebus.{name}" for name in find_packages(include=[f"{m}*" for m in MAPPED]))],
    package_dir={"framebus": "framebus", **{f"framebus.{name}": name for name in MAPPED}},
)
