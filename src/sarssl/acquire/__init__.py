"""Opt-in acquisition of real inputs: Sentinel-1 GRD products, orbit files, DEM, labels.

The demo workflow stays offline; these downloaders are for running the study on real
data (``sarssl acquire ...``, see docs/acquisition.md). All of them share
:class:`sarssl.acquire.http.HttpClient`: bounded retries with back-off that honours
``Retry-After``, credentials only from environment variables or netrc, resumable
``Range`` downloads into ``.part`` files, size/checksum verification and an atomic rename.

Modules: :mod:`.http` (client), :mod:`.sentinel1` (ASF / CDSE search + download),
:mod:`.orbits` (POEORB/RESORB), :mod:`.dem` (Copernicus GLO-30), :mod:`.worldcover`
(ESA WorldCover), :mod:`.modis` (MOD44B tree cover), :mod:`.cli` (``sarssl acquire``),
:mod:`.plan` (``sarssl plan``: products, GB, jobs and GPU-hours of a config). The workflow
runs them per area (workflow/rules/acquire.smk: search checkpoint, one job per product).

Why our own code rather than asf_search, sentineleof / s1-orbits, dem-stitcher or
earthaccess (all on PyPI, none installed here; their documentation was read, the packages
were not evaluated installed): every service must be replaceable by a local server on
127.0.0.1 for the tests and by a mirror for users, and every transfer must follow one
policy (``Range`` resume from ``.part``, size + MD5 check, atomic rename, bounded retries
honouring ``Retry-After``, credentials only from the environment or netrc). asf_search
and earthaccess search NASA's CMR (not the ASF Search API / CDSE OData answers the tests
replay) with their own sessions; sentineleof and s1-orbits fetch from the endpoints they
know (s1-orbits: the AWS open-data bucket only); dem-stitcher reads remote tiles through
rasterio and returns an in-memory array, while here the tiles are kept for reruns,
mosaicked on their own grid and the EGM2008 datum is recorded in the CRS. Each would need
its hosts patched to run against local servers, so the code here (one HTTP client and
thin per-service adapters) is the smaller thing to own. Revisit when one of them
gains configurable endpoints and resumable, verified downloads.
"""

from .http import AcquireError, AuthenticationError, ChecksumError, HttpClient, NotFoundError

__all__ = ["AcquireError", "AuthenticationError", "ChecksumError", "HttpClient", "NotFoundError"]
