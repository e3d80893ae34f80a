"""The client side: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio), their result
types, and the client codec. Imports no ``fastraft._core``: a client runs without the extension.
"""

from fastraft.client import api as _api
from fastraft.client.api import *  # noqa: F403  (the public names of api, listed in its __all__)

__all__ = list(_api.__all__)
