"""The built-in suites: TOML files shipped in this package, named by their stem (`decorbench run smoke`).

Kept free of torch so that `decorbench run --help` can list them instantly.
"""

from importlib import resources


def builtin_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".toml"))
