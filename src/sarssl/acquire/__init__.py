"""Opt-in acquisition of real inputs: Sentinel-1 GRD products, orbit files, DEM, labels.

The demo workflow stays offline; these downloaders are for running the study on real
data (``sarssl acquire ...``, see docs/acquisition.md). All of them share
:class:`sarssl.acquire.http.HttpClient`: bounded retries with back-off that honours
``Retry-After``, credentials only from environment variables or netrc, resumable
``Range`` downloads into ``.part`` files, size/checksum verification and an atomic rename.

Modules: :mod:`.http` (client), :mod:`.sentinel1` (ASF / CDSE search + download),
:mod:`.orbits` (POEORB/RESORB), :mod:`.dem` (Copernicus GLO-30), :mod:`.worldcover`
(ESA WorldCover), :mod:`.modis` (MOD44B tree cover), :mod:`.cli` (``sarssl acquire``).
"""

from .http import AcquireError, AuthenticationError, ChecksumError, HttpClient, NotFoundError

__all__ = ["AcquireError", "AuthenticationError", "ChecksumError", "HttpClient", "NotFoundError"]
