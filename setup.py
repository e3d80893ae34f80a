# setup.py only declares the native extension; metadata lives in pyproject.toml.
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# FASTRAFT_DEBUG=1 builds with bounds checks and assertions on, for debugging the core.
debug = os.environ.get("FASTRAFT_DEBUG") == "1"
# FASTRAFT_CLIENT_ONLY=1 installs without the extension (no compiler needed): fastraft.client and
# fastractl work (they import no _core, tests/wire/test_client_only.py); a member cannot run.
client_only = os.environ.get("FASTRAFT_CLIENT_ONLY") == "1"

extensions = [
    Extension(
        "fastraft._core",
        ["src/fastraft/_core.pyx"],
        extra_compile_args=["-O0", "-g"] if debug else ["-O2"],
    )
]

setup(
    ext_modules=[] if client_only else cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": debug,
            "wraparound": debug,
            "cdivision": True,
            "embedsignature": True,
        },
    )
)
