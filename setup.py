"""Build the Cython core: `_native/_native.pyx` into `importer._native`, `_http.pyx` into
`importer._http`, `_sign.pyx` into `importer._sign`,
`_digests.pyx` into `importer._digests`.

setuptools reads everything else from pyproject.toml; this file exists only
because extension modules still need code to declare.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "importer._native",
        sources=["_native/_native.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension("importer._http", sources=["_native/_http.pyx"], extra_compile_args=["-O3"]),
    Extension("importer._sign", sources=["_native/_sign.pyx"], extra_compile_args=["-O3"]),
    Extension("importer._digests", sources=["_native/_digests.pyx"], extra_compile_args=["-O3"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
