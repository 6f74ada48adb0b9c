"""`--cluster local[:N] | tcp://host:8786`: parse it, start or reach the cluster, and say where its dashboard is."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
"""How long to try a scheduler address, and to wait for its first worker, before saying it is unreachable."""


class ClusterError(RuntimeError):
    """The cluster cannot be used: a bad --cluster value, an unreachable scheduler, no workers, lost workers."""


@dataclass(frozen=True)
class ClusterSpec:
    """A local cluster of ``workers`` processes (None: one per GPU, else per CPU core), or a scheduler's address."""

    address: str | None = None
    workers: int | None = None

    @property
    def local(self) -> bool:
        return self.address is None

    def local_workers(self) -> int:
        """Worker processes of a local cluster: as asked, else one per GPU, else one per CPU core."""
        if self.workers:
            return self.workers
        import torch

        return torch.cuda.device_count() or os.cpu_count() or 1


def parse_cluster(spec: str) -> ClusterSpec:
    """``local``, ``local:N`` or a scheduler address (``tcp://host:port``, ``tls://...``, ``host:port``)."""
    text = spec.strip()
    if text == "local":
        return ClusterSpec()
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ClusterError(f"--cluster {spec!r}: local:N needs a worker count N >= 1, e.g. local:2")
        return ClusterSpec(workers=int(count))
    scheme, _, rest = text.rpartition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("", "tcp", "tls", "ucx", "inproc") or not host or not port.isdigit():
        raise ClusterError(
            f"--cluster {spec!r} is neither local[:N] nor a scheduler address like tcp://host:8786"
        )
    return ClusterSpec(address=text if scheme else f"tcp://{text}")


def local_torch_threads(workers: int) -> int:
    """Torch threads per worker of a local cluster: the machine's cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // workers)


@contextlib.contextmanager
def connect(spec: ClusterSpec, *, dashboard_address: str | None = "127.0.0.1:8787") -> Iterator:
    """A distributed.Client on the cluster (a local one is started and closed around the block).

    Local workers run one task at a time (``threads_per_worker=1``); their torch threads are set by the
    replay's worker plugin.
    """
    import dask
    from distributed import Client, LocalCluster

    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # Dask logs every worker and connection at INFO
        logging.getLogger("distributed").setLevel(logging.CRITICAL)  # failures reach the caller as exceptions
    if spec.local:
        # Dask's nannies set MALLOC_TRIM_THRESHOLD_, which turns off glibc's adaptive mmap threshold: every large
        # tensor is then fresh pages (measured: the shipped model 1.6x slower per frame on this CPU)
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), \
                LocalCluster(n_workers=spec.local_workers(), threads_per_worker=1, processes=True,
                             dashboard_address=dashboard_address, silence_logs=logging.CRITICAL) as cluster, \
                Client(cluster) as client:  # fmt: skip
            yield client
        return
    try:
        if spec.address.startswith("tcp://"):  # a refused port fails at once (Dask retries until its timeout)
            host, _, port = spec.address.removeprefix("tcp://").rpartition(":")
            socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
        client = Client(spec.address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {spec.address} ({type(exc).__name__}: {exc}). Start one with "
            f"`dask scheduler` and workers with `dask worker {spec.address}`, check the address and port, "
            "or use --cluster local[:N] for workers on this machine."
        ) from None
    with client:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise ClusterError(
                f"the Dask scheduler at {spec.address} has no workers (waited {CONNECT_TIMEOUT_S:.0f} s); start "
                f"some with `dask worker {spec.address}`"
            ) from None
        yield client


def describe(client) -> str:
    """One line: the workers and the dashboard link."""
    info = client.scheduler_info()
    link = client.dashboard_link if info.get("services", {}).get("dashboard") else None
    where = f"dashboard {link}" if link else "no dashboard (install bokeh to get one)"
    n = len(info["workers"])
    return f"Dask cluster {client.scheduler.address}: {n} worker{'s' if n != 1 else ''}; {where}"
