"""The consensus member's configuration: flags named like etcd's, each also
settable as the environment variable SYNOD_<FLAG_IN_UPPER_SNAKE>.

A flag given on the command line wins over the environment; the environment
wins over the default.

TLS follows etcd: `--cert-file/--key-file/--trusted-ca-file` for the client
API, `--peer-cert-file/--peer-key-file/--peer-trusted-ca-file` between members
(the peer server uses them, and so does the peer transport when it dials
another member, presenting the same certificate as its client certificate).
A URL's scheme says whether it is TLS: https:// URLs need the matching
certificate, and plain http:// URLs are refused while one is given, so a
member never serves one API both ways (etcd serves http:// listeners
plaintext beside TLS ones and only warns). See synod.tls and docs/tls.md.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from synod import health_port, tls
from synod.flags import ConfigError, FlagSource, add_flags, env_name, parse_url

__all__ = ["ConfigError", "MemberConfig", "add_arguments", "env_name", "from_args", "parse_url"]

MIB = 1024 * 1024


def parse_urls(value: str, flag: str) -> list[str]:
    urls = [u.strip() for u in value.split(",") if u.strip()]
    if not urls:
        raise ConfigError(f"{flag}: at least one URL is required")
    for u in urls:
        parse_url(u, flag)
    return urls


def is_https(url: str) -> bool:
    return url.strip().lower().startswith("https://")


def normalize_url(url: str) -> str:
    """`host:port`, `http://host:port/` -> `http://host:port`; https:// keeps its scheme."""
    host, port = parse_url(url, "url")
    return f"{'https' if is_https(url) else 'http'}://{host}:{port}"


def parse_initial_cluster(value: str) -> dict[str, list[str]]:
    """`n1=http://a:2380,n2=http://b:2380` -> {"n1": [...], "n2": [...]} (a name may repeat)."""
    out: dict[str, list[str]] = {}
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, url = part.partition("=")
        if not sep or not name or not url:
            raise ConfigError(f"--initial-cluster: {part!r} is not name=url")
        parse_url(url, "--initial-cluster")
        out.setdefault(name.strip(), []).append(normalize_url(url))
    if not out:
        raise ConfigError("--initial-cluster: no members given")
    return out


def member_id(peer_urls: list[str], cluster_token: str) -> int:
    """A member's id, derived like etcd's from its peer URLs and the cluster token."""
    h = hashlib.sha1()
    for u in sorted(normalize_url(u) for u in peer_urls):
        h.update(u.encode())
    h.update(cluster_token.encode())
    return int.from_bytes(h.digest()[:8], "big") or 1


def cluster_id(member_ids: list[int]) -> int:
    h = hashlib.sha1()
    for m in sorted(member_ids):
        h.update(m.to_bytes(8, "big"))
    return int.from_bytes(h.digest()[:8], "big") or 1


@dataclass
class MemberConfig:
    name: str = "default"
    data_dir: str = ""
    listen_client_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    advertise_client_urls: list[str] = field(default_factory=list)
    listen_peer_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2380"])
    initial_advertise_peer_urls: list[str] = field(default_factory=list)
    initial_cluster: dict[str, list[str]] = field(default_factory=dict)
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "synod-cluster"
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = 10000
    #: entries a snapshot covers that stay in memory, so that a follower a little
    #: behind at the snapshot gets appends rather than the whole snapshot
    snapshot_catchup_entries: int = 5000
    #: ms a leader waits before telling followers of a commit that no append carried
    commit_broadcast_delay_ms: float = 2.0
    max_request_bytes: int = int(1.5 * MIB)
    metrics_addr: str = ""
    health_addr: str = ""
    unsafe_no_fsync: bool = False
    #: the client API's TLS (None: plaintext)
    client_tls: tls.ServerTLS | None = None
    #: the peer server's TLS (None: plaintext)
    peer_tls: tls.ServerTLS | None = None
    #: how this member dials other members' https:// peer URLs
    peer_client_tls: tls.ClientTLS | None = None
    #: test-only broken mode: linearizable reads served from local state, no ReadIndex
    unsafe_local_reads: bool = False

    @property
    def election_ticks(self) -> int:
        return self.election_timeout_ms // self.heartbeat_interval_ms

    def member_ids(self) -> dict[str, int]:
        return {
            name: member_id(urls, self.initial_cluster_token)
            for name, urls in self.initial_cluster.items()
        }

    @property
    def id(self) -> int:
        return self.member_ids()[self.name]


# (flag, metavar, help). Types are handled in `from_args`.
_FLAGS: list[tuple[str, str, str]] = [
    ("--name", "NAME", "human-readable name of this member (default: default)"),
    ("--data-dir", "DIR", "where the WAL and snapshots live (default: NAME.synod)"),
    ("--listen-client-urls", "URLS", "URLs to serve the client (etcd v3) API on"),
    ("--advertise-client-urls", "URLS", "client URLs to tell clients (default: listen URLs)"),
    ("--listen-peer-urls", "URLS", "URLs to serve peer (Raft) traffic on"),
    ("--initial-advertise-peer-urls", "URLS", "this member's peer URLs as others reach them"),
    ("--initial-cluster", "NAME=URL,...", "every initial member's peer URL"),
    ("--initial-cluster-state", "new|existing", "start a new cluster or join an existing one"),
    ("--initial-cluster-token", "TOKEN", "distinguishes clusters started with the same URLs"),
    ("--heartbeat-interval", "MS", "leader heartbeat interval in ms (default: 100)"),
    ("--election-timeout", "MS", "election timeout in ms (default: 1000)"),
    ("--snapshot-count", "N", "applied entries between snapshots (default: 10000)"),
    (
        "--snapshot-catchup-entries",
        "N",
        "entries kept in memory behind each snapshot for slow followers to catch up "
        "from (default: 5000)",
    ),
    (
        "--commit-broadcast-delay",
        "MS",
        "how long a leader waits for the next appends to carry a new commit index to "
        "followers before sending it on its own; 0 sends it at once (default: 2)",
    ),
    ("--max-request-bytes", "BYTES", "largest client request accepted (default: 1.5 MiB)"),
    ("--metrics-addr", "HOST:PORT", "serve Prometheus metrics over HTTP here (default: off)"),
    health_port.FLAG,
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flags(p, _FLAGS)
    tls.add_server_arguments(p)
    tls.add_server_arguments(p, "peer-")
    p.add_argument(
        "--unsafe-no-fsync",
        action="store_const",
        const="true",
        default=None,
        help="skip fsync: fast, and loses acknowledged writes on power loss; tests only "
        "[env SYNOD_UNSAFE_NO_FSYNC]",
    )
    # Deliberately broken, for showing that `synod check` catches stale reads:
    # hidden from --help so nobody turns it on by browsing the flags.
    p.add_argument(
        "--unsafe-local-reads", action="store_const", const="true", default=None,
        help=argparse.SUPPRESS,
    )  # fmt: skip


def _int(value: str, flag: str, minimum: int = 1) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{flag}: {value!r} is not an integer") from None
    if n < minimum:
        raise ConfigError(f"{flag}: must be >= {minimum}, got {n}")
    return n


def from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None, serving: bool = True
) -> MemberConfig:
    """The configuration the flags describe; `serving=False` (snapshot restore, which only
    writes a data directory) skips the TLS settings and the URL schemes they decide."""
    get = FlagSource(args, environ).get

    c = MemberConfig()
    if (v := get("--name")) is not None:
        c.name = v
    c.data_dir = get("--data-dir") or f"{c.name}.synod"
    if (v := get("--listen-client-urls")) is not None:
        c.listen_client_urls = parse_urls(v, "--listen-client-urls")
    v = get("--advertise-client-urls")
    c.advertise_client_urls = (
        parse_urls(v, "--advertise-client-urls") if v else list(c.listen_client_urls)
    )
    if (v := get("--listen-peer-urls")) is not None:
        c.listen_peer_urls = parse_urls(v, "--listen-peer-urls")
    v = get("--initial-advertise-peer-urls")
    c.initial_advertise_peer_urls = (
        parse_urls(v, "--initial-advertise-peer-urls") if v else list(c.listen_peer_urls)
    )
    v = get("--initial-cluster")
    c.initial_cluster = (
        parse_initial_cluster(v)
        if v
        else {c.name: [normalize_url(u) for u in c.initial_advertise_peer_urls]}
    )
    state = get("--initial-cluster-state") or "new"
    if state not in ("new", "existing"):
        raise ConfigError(f"--initial-cluster-state: must be new or existing, got {state!r}")
    c.initial_cluster_state = state
    if (v := get("--initial-cluster-token")) is not None:
        c.initial_cluster_token = v
    if (v := get("--heartbeat-interval")) is not None:
        c.heartbeat_interval_ms = _int(v, "--heartbeat-interval")
    if (v := get("--election-timeout")) is not None:
        c.election_timeout_ms = _int(v, "--election-timeout")
    if c.election_timeout_ms < 5 * c.heartbeat_interval_ms:
        raise ConfigError(
            "--election-timeout must be at least 5x --heartbeat-interval "
            f"(got {c.election_timeout_ms} and {c.heartbeat_interval_ms})"
        )
    if (v := get("--snapshot-count")) is not None:
        c.snapshot_count = _int(v, "--snapshot-count")
    if (v := get("--snapshot-catchup-entries")) is not None:
        c.snapshot_catchup_entries = _int(v, "--snapshot-catchup-entries", minimum=0)
    if (v := get("--commit-broadcast-delay")) is not None:
        try:
            c.commit_broadcast_delay_ms = float(v)
        except ValueError:
            raise ConfigError(f"--commit-broadcast-delay: {v!r} is not a number") from None
        if not 0 <= c.commit_broadcast_delay_ms <= c.heartbeat_interval_ms:
            raise ConfigError(
                "--commit-broadcast-delay: must be between 0 and --heartbeat-interval "
                f"({c.heartbeat_interval_ms}), got {v}"
            )
    if (v := get("--max-request-bytes")) is not None:
        c.max_request_bytes = _int(v, "--max-request-bytes", 1024)
    c.metrics_addr = get("--metrics-addr") or ""
    if c.metrics_addr:
        parse_url(c.metrics_addr, "--metrics-addr")
    c.health_addr = get("--health-addr") or ""
    if c.health_addr:
        parse_url(c.health_addr, "--health-addr")
    v = get("--unsafe-no-fsync")
    c.unsafe_no_fsync = v is not None and v.lower() in ("1", "true", "yes", "on")
    v = get("--unsafe-local-reads")
    c.unsafe_local_reads = v is not None and v.lower() in ("1", "true", "yes", "on")
    if serving:
        _tls_from(get, c)
    if c.name not in c.initial_cluster:
        raise ConfigError(
            f"--initial-cluster does not name this member ({c.name!r}); "
            f"it names {', '.join(sorted(c.initial_cluster))}"
        )
    mine = sorted(normalize_url(u) for u in c.initial_advertise_peer_urls)
    if sorted(c.initial_cluster[c.name]) != mine:
        raise ConfigError(
            f"--initial-cluster gives {c.name!r} the peer URLs {c.initial_cluster[c.name]}, "
            f"but --initial-advertise-peer-urls says {mine}"
        )
    return c


def _tls_from(get: tls.FlagGetter, c: MemberConfig) -> None:
    """TLS settings, and URL schemes that agree with them (https:// exactly when TLS is on)."""
    c.client_tls = tls.server_tls_from(get)
    c.peer_tls = tls.server_tls_from(get, "peer-")
    if c.peer_tls is not None:
        c.peer_client_tls = tls.ClientTLS(
            c.peer_tls.trusted_ca_file, c.peer_tls.cert_file, c.peer_tls.key_file
        )
    checks = [
        ("--listen-client-urls", c.listen_client_urls, c.client_tls, "--cert-file"),
        ("--advertise-client-urls", c.advertise_client_urls, c.client_tls, "--cert-file"),
        ("--listen-peer-urls", c.listen_peer_urls, c.peer_tls, "--peer-cert-file"),
        (
            "--initial-advertise-peer-urls",
            c.initial_advertise_peer_urls,
            c.peer_tls,
            "--peer-cert-file",
        ),
    ]
    for flag, urls, server_tls, cert_flag in checks:
        for url in urls:
            if is_https(url) and server_tls is None:
                raise ConfigError(f"{flag}: {url} is https:// but no {cert_flag} is given")
            if not is_https(url) and server_tls is not None:
                raise ConfigError(
                    f"{flag}: {url} is not https:// but {cert_flag} is given: "
                    "use https:// URLs when TLS is on"
                )
