"""warren_client: publish jobs to a Warren worker fleet over RabbitMQ and collect their results.

    from warren_client import Client

    with Client("amqp://guest:guest@127.0.0.1:5672/%2f") as client:
        result = client.run("checksum", {"data": b"hello"})
        print(result.value)            # {'bytes': 5, 'rounds': 1, 'crc32': 907060870}

See docs/contract.md for the job kinds and what their results hold.
"""

from ._client import Client, Ref, status
from . import errors
from .errors import *  # noqa: F401,F403 - the exceptions, one class per Warren error type
from .result import Result

__all__ = ["Client", "Ref", "Result", "status", *errors.__all__]

__version__ = "0.1.0"
