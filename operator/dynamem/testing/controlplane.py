"""A real etcd and kube-apiserver on loopback ports, for integration tests, `make cluster` and the demo.

Why a real server and not a fake: dynamem's correctness depends on what the API server does with our objects
(KubeVirt's OpenAPI schema rejecting a malformed VirtualMachine, CEL rules on our CRD, RBAC denying a
service account, the status subresource, resourceVersion conflicts). A mock would agree with whatever we
believe; the real server does not. This is the envtest pattern from controller-runtime plus the two parts a
KubeVirt VM's life needs: etcd, kube-apiserver, the real kube-scheduler (same pinned `k8s.io/kubernetes`,
its own client certificate as `system:kube-scheduler`, leader election off) and kwok (`sigs.k8s.io/kwok`,
its own client certificate) playing the kubelet of every node: a pod the scheduler binds becomes Running, a
deleted pod goes away. All are started from a folder of binaries that `make controlplane` builds from pinned
Go modules into a cache outside the repository. No controller-manager.

Consequences worth knowing:
- Nodes are plain objects: `ControlPlane.create_node` writes capacity, allocatable and a Ready condition
  through the status subresource; kwok keeps them (it renews the heartbeat, never the resources).
- Without a controller-manager, namespaces never finish deleting and ownerReferences are never collected:
  use a fresh namespace per test.
- Users are client certificates issued by a throwaway CA (CN = user, O = groups); the admin is in
  `system:masters`. `ControlPlane.api_client(user=..., groups=...)` acts as anyone, e.g. a service account.

Processes run in their own process groups and are stopped with SIGTERM, then SIGKILL; `stop()` is also
registered with `atexit`, and on Linux the children get SIGKILL when the thread that started them ends
(PR_SET_PDEATHSIG), so even `kill -9` of the test run leaves no server behind. Start the control plane from a
thread that lives as long as you need it (pytest's main thread does).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import yaml
from kubernetes import client as k8s_client

__all__ = [
    "CONTROLPLANE_KEY",
    "ControlPlane",
    "ControlPlaneError",
    "UserCredentials",
    "binaries_dir",
    "free_port",
    "repo_root",
]

# Must match tools/build-controlplane.sh (tests/integration/test_controlplane.py checks that it does).
K8S_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.4"
KUBEVIRT_VERSION = "v1.7.0"
KWOK_VERSION = "v0.7.0"
CONTROLPLANE_KEY = f"k8s-{K8S_VERSION}_etcd-{ETCD_VERSION}_kubevirt-{KUBEVIRT_VERSION}_kwok-{KWOK_VERSION}"
REQUIRED_FILES = ("kube-apiserver", "kube-scheduler", "etcd", "kwok", "kubevirt-crds.yaml", "COMPLETE")

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
ADMIN_USER = "dynamem-admin"
ADMIN_GROUPS = ("system:masters",)
# Kubernetes' bootstrap RBAC binds this user to system:kube-scheduler and system:volume-scheduler.
SCHEDULER_USER = "system:kube-scheduler"
KWOK_USER = (
    "dynamem:kwok"  # bound to cluster-admin by the harness: kwok patches node and pod status, deletes pods
)
_LOG_TAIL_LINES = 40


class ControlPlaneError(RuntimeError):
    """The control plane could not be found, started, or did not become ready."""


@dataclass(frozen=True)
class UserCredentials:
    """A client certificate and key issued by the control plane's CA for one user and its groups."""

    user: str
    groups: tuple[str, ...]
    cert_path: Path
    key_path: Path


def repo_root() -> Path:
    """The repository checkout this package was installed from (editable install), holding `crds/`."""
    return Path(__file__).resolve().parents[3]


def cache_dir() -> Path:
    """`$DYNAMEM_CACHE`, else `~/.cache/dynamem`: where `make controlplane` puts its builds."""
    env = os.environ.get("DYNAMEM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dynamem"


def binaries_dir() -> Path:
    """The folder holding kube-apiserver, etcd and kubevirt-crds.yaml for the pinned versions.

    `$DYNAMEM_CONTROLPLANE_BINARIES` overrides the lookup. Raises `ControlPlaneError` naming the missing file
    and telling you to run `make controlplane`.
    """
    override = os.environ.get("DYNAMEM_CONTROLPLANE_BINARIES")
    folder = Path(override) if override else cache_dir() / "controlplane" / CONTROLPLANE_KEY
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise ControlPlaneError(
                f"control-plane binaries incomplete: {folder / name} is missing; run `make controlplane` "
                f"(it builds {CONTROLPLANE_KEY} from Go modules into {cache_dir() / 'controlplane'})"
            )
    return folder


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the thread that started it exits (Linux only)."""
    # Runs in the child between fork and exec: keep it to one system call.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


class ServerProcess:
    """One server process in its own process group, logging to a file."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def check_alive(self, error: type[RuntimeError] = ControlPlaneError) -> None:
        code = self.popen.poll()
        if code is not None:
            raise error(
                f"{self.name} exited with code {code}; last lines of {self.log_path}:\n"
                + log_tail(self.log_path)
            )

    def wait_ready(
        self,
        deadline: float,
        ready: Callable[[], bool],
        timeout_s: float,
        error: type[RuntimeError] = ControlPlaneError,
    ) -> None:
        """Poll ``ready`` until True; fail with the log's tail if the process dies or time runs out."""
        last_error = "not ready yet"
        while True:
            self.check_alive(error)
            try:
                if ready():
                    return
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise error(
                    f"{self.name} not ready after {timeout_s:.0f}s ({last_error}); last lines of "
                    f"{self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        # The leader is gone; anything it left in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


class _CertificateAuthority:
    """A throwaway CA made with the `openssl` CLI (EC P-256 keys: fast to generate)."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("openssl") is None:
            raise ControlPlaneError("the `openssl` command is needed to make the test CA; install openssl")
        self.directory = directory
        self.cert_path = directory / "ca.crt"
        self.key_path = directory / "ca.key"
        self._serial = 1
        self._run(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(self.key_path), "-out", str(self.cert_path), "-subj", "/CN=dynamem-test-ca",
            "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip

    def _run(self, *args: str) -> None:
        result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ControlPlaneError(f"openssl {' '.join(args)} failed:\n{result.stderr}")

    def issue(self, stem: str, subject: str, extensions: str) -> tuple[Path, Path]:
        """Issue a certificate for `subject` (openssl `/CN=.../O=...` form) with the given v3 extensions."""
        key, csr, cert = (self.directory / f"{stem}{suffix}" for suffix in (".key", ".csr", ".crt"))
        ext = self.directory / f"{stem}.ext"
        ext.write_text(extensions)
        self._run(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", subject,
        )  # fmt: skip
        self._serial += 1
        self._run(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert_path), "-CAkey", str(self.key_path),
            "-set_serial", str(self._serial), "-days", "30", "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        return cert, key

    def issue_client(self, stem: str, user: str, groups: Iterable[str]) -> tuple[Path, Path]:
        parts = [f"/CN={_escape_dn(user)}", *(f"/O={_escape_dn(group)}" for group in groups)]
        extensions = "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
        return self.issue(stem, "".join(parts), extensions)

    def issue_server(self, stem: str, ips: Iterable[str], dns: Iterable[str]) -> tuple[Path, Path]:
        sans = ",".join([*(f"IP:{ip}" for ip in ips), *(f"DNS:{name}" for name in dns)])
        return self.issue(
            stem,
            "/CN=kube-apiserver",
            f"keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName={sans}\n",
        )


def _escape_dn(value: str) -> str:
    if not value or any(ord(ch) < 32 for ch in value):
        raise ControlPlaneError(f"unusable name for a certificate subject: {value!r}")
    if len(value) > 64:
        raise ControlPlaneError(
            f"{value!r} is longer than the 64 characters a certificate subject allows; for a service account "
            "use ControlPlane.service_account_client(namespace, name)"
        )
    return value.replace("\\", "\\\\").replace("/", "\\/").replace("=", "\\=").replace("+", "\\+")


def _b64_file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, with our CRDs and KubeVirt's installed.

    Use as a context manager, or call `start()` and `stop()`:

        with ControlPlane() as cp:
            core = kubernetes.client.CoreV1Api(cp.api_client())
            cp.create_node("node-a", memory="64Gi")

    `binaries`: folder with kube-apiserver, etcd and kubevirt-crds.yaml (default: `binaries_dir()`).
    `work_dir`: where certificates, etcd data, logs and the kubeconfig go (default: a fresh temp dir,
    removed by `stop()`; a given folder is kept). `crd_dir`: our CRDs, every `*.yaml` in it (default: the
    repository's `crds/`; missing or empty is fine). `kubevirt_crds`: install KubeVirt's CRDs.
    `scheduler`: run kube-scheduler; `kwok`: run kwok as the kubelet of every node (both on by default).
    """

    def __init__(
        self,
        binaries: Path | None = None,
        *,
        work_dir: Path | None = None,
        crd_dir: Path | None = None,
        kubevirt_crds: bool = True,
        start_timeout: float = 60.0,
        extra_apiserver_args: Sequence[str] = (),
        scheduler: bool = True,
        kwok: bool = True,
        extra_scheduler_args: Sequence[str] = (),
    ) -> None:
        self.binaries_dir = binaries if binaries is not None else binaries_dir()
        self.with_scheduler = scheduler
        self.with_kwok = kwok
        self.extra_scheduler_args = tuple(extra_scheduler_args)
        wanted = ["kube-apiserver", "etcd"] + ["kube-scheduler"] * scheduler + ["kwok"] * kwok
        for name in wanted:
            if not (self.binaries_dir / name).is_file():
                raise ControlPlaneError(f"{self.binaries_dir / name} is missing; run `make controlplane`")
        self._owns_work_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="dynamem-cp-")) if work_dir is None else work_dir
        self.crd_dir = crd_dir if crd_dir is not None else repo_root() / "crds"
        self.kubevirt_crds = kubevirt_crds
        self.start_timeout = start_timeout
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.kubeconfig_path = self.work_dir / "kubeconfig"
        self.etcd_url = ""
        self.server_url = ""
        self._etcd: ServerProcess | None = None
        self._apiserver: ServerProcess | None = None
        self._scheduler: ServerProcess | None = None
        self._kwok: ServerProcess | None = None
        self._ca: _CertificateAuthority | None = None
        self._users: dict[tuple[str, tuple[str, ...]], UserCredentials] = {}
        self._admin: UserCredentials | None = None
        self._http: httpx.Client | None = None
        self._atexit_registered = False

    # -- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._apiserver is not None and self._apiserver.popen.poll() is None

    def start(self) -> Self:
        """Start etcd and kube-apiserver, wait for /readyz, write the kubeconfig, install CRDs."""
        if self._apiserver is not None:
            return self
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        self.work_dir.mkdir(parents=True, exist_ok=True)
        pki = self.work_dir / "pki"
        pki.mkdir(exist_ok=True)
        self._ca = _CertificateAuthority(pki)
        serving_cert, serving_key = self._ca.issue_server(
            "apiserver", ips=["127.0.0.1", "10.0.0.1"], dns=["localhost", "kubernetes", "kubernetes.default"]
        )
        sa_key = pki / "service-account.key"
        self._ca._run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(sa_key))
        self._admin = self.user_credentials(ADMIN_USER, ADMIN_GROUPS)

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._etcd = ServerProcess(
            "etcd",
            [
                str(self.binaries_dir / "etcd"),
                f"--data-dir={self.work_dir / 'etcd-data'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            self.work_dir / "etcd.log",
        )
        self._etcd.wait_ready(
            deadline,
            lambda: httpx.get(f"{self.etcd_url}/health", timeout=1.0).status_code == 200,
            self.start_timeout,
        )

        self.server_url = f"https://127.0.0.1:{api_port}"
        self._apiserver = ServerProcess(
            "kube-apiserver",
            [
                str(self.binaries_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={serving_cert}",
                f"--tls-private-key-file={serving_key}",
                f"--client-ca-file={self._ca.cert_path}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                # TaintNodesByCondition taints every new node not-ready; the node lifecycle controller (in the
                # controller-manager, which does not run here) would lift it once the node is Ready.
                "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
                f"--service-account-issuer={self.server_url}",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                "--endpoint-reconciler-type=none",
                *self.extra_apiserver_args,
            ],
            self.work_dir / "kube-apiserver.log",
        )
        self._http = self._http_client(self._admin)
        http = self._http
        self._apiserver.wait_ready(
            deadline, lambda: http.get("/readyz").status_code == 200, self.start_timeout
        )

        self.write_kubeconfig(self.kubeconfig_path)
        # The scheduler and kwok need no CRD: they start while the CRDs install, and are waited for after.
        health: list[tuple[ServerProcess, str, bool]] = []
        if self.with_scheduler:
            self._scheduler, url = self._launch_scheduler()
            health.append((self._scheduler, url, False))
        if self.with_kwok:
            self._kwok, url = self._launch_kwok()
            health.append((self._kwok, url, True))

        documents: list[dict[str, Any]] = []
        if self.crd_dir.is_dir():
            for path in sorted(self.crd_dir.glob("*.yaml")):
                documents.extend(_load_yaml_documents(path))
        if self.kubevirt_crds:
            documents.extend(_load_yaml_documents(self.binaries_dir / "kubevirt-crds.yaml"))
        crds = [doc for doc in documents if doc.get("kind") == "CustomResourceDefinition"]
        self.install_crds(crds, timeout=max(1.0, deadline - time.monotonic()))
        for process, url, verify in health:
            with httpx.Client(base_url=url, verify=verify, timeout=1.0) as client:
                process.wait_ready(
                    deadline,
                    lambda c=client: c.get("/healthz").status_code == 200,  # type: ignore[misc]
                    self.start_timeout,
                )

    def _launch_scheduler(self) -> tuple[ServerProcess, str]:
        """kube-scheduler with the default profile, as `system:kube-scheduler`, serving /healthz on loopback.

        Leader election is off (one scheduler per control plane). Its serving certificate is self-signed into
        its own folder; health is checked without client authentication (`/healthz` is always allowed).
        """
        kubeconfig = self.write_kubeconfig(self.work_dir / "scheduler.kubeconfig", SCHEDULER_USER)
        port = free_port()
        process = ServerProcess(
            "kube-scheduler",
            [
                str(self.binaries_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.work_dir / 'scheduler-pki'}",
                *self.extra_scheduler_args,
            ],
            self.work_dir / "kube-scheduler.log",
        )
        return process, f"https://127.0.0.1:{port}"

    def _launch_kwok(self) -> tuple[ServerProcess, str]:
        """kwok managing every node with its default stages (pod-ready, pod-complete, pod-delete, heartbeat).

        kwok is the kubelet here: pods bound to a node become Running with a pod IP; pods being deleted lose
        their finalizers and are removed. It acts as its own user, bound to cluster-admin.
        """
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "dynamem:kwok"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KWOK_USER}],
        }
        created = self.http.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json=binding)
        if created.status_code not in (201, 409):
            raise ControlPlaneError(f"binding kwok's user: {created.status_code} {created.text}")
        kubeconfig = self.write_kubeconfig(self.work_dir / "kwok.kubeconfig", KWOK_USER)
        port = free_port()
        process = ServerProcess(
            "kwok",
            [
                str(self.binaries_dir / "kwok"),
                f"--kubeconfig={kubeconfig}",
                "--manage-all-nodes=true",
                f"--server-address=127.0.0.1:{port}",
            ],
            self.work_dir / "kwok.log",
        )
        return process, f"http://127.0.0.1:{port}"

    def restart(self, component: str, *, down_s: float = 0.0, kill: bool = False) -> None:
        """Stop ``etcd`` or ``kube-apiserver`` (SIGKILL with ``kill``), wait ``down_s``, start it again on the
        same port and data, and wait until it is ready: for fault-injection tests."""
        process = {"etcd": self._etcd, "kube-apiserver": self._apiserver}[component]
        if process is None:
            raise ControlPlaneError(f"{component} is not running")
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait(10)
        else:
            process.stop()
        time.sleep(down_s)
        fresh = ServerProcess(component, process.popen.args, process.log_path)  # type: ignore[arg-type]
        deadline = time.monotonic() + self.start_timeout
        if component == "etcd":
            self._etcd = fresh
            fresh.wait_ready(
                deadline,
                lambda: httpx.get(f"{self.etcd_url}/health", timeout=1.0).status_code == 200,
                self.start_timeout,
            )
        else:
            self._apiserver = fresh
        http = self.http
        fresh_api = self._apiserver
        assert fresh_api is not None
        fresh_api.wait_ready(deadline, lambda: http.get("/readyz").status_code == 200, self.start_timeout)

    def stop(self) -> None:
        """Stop kube-apiserver and etcd (SIGTERM, then SIGKILL); remove a temporary work dir. Idempotent."""
        if self._http is not None:
            self._http.close()
            self._http = None
        for process in (self._kwok, self._scheduler, self._apiserver, self._etcd):
            if process is not None:
                process.stop()
        self._kwok = self._scheduler = self._apiserver = self._etcd = None
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    # -- identities ------------------------------------------------------------------------------------

    def user_credentials(self, user: str, groups: Sequence[str] = ()) -> UserCredentials:
        """A client certificate for `user` in `groups`, issued by the throwaway CA (cached per identity)."""
        if self._ca is None:
            raise ControlPlaneError("the control plane is not started")
        key = (user, tuple(groups))
        if key not in self._users:
            stem = f"user-{len(self._users)}"
            cert, private_key = self._ca.issue_client(stem, user, groups)
            self._users[key] = UserCredentials(user, tuple(groups), cert, private_key)
        return self._users[key]

    @property
    def ca_cert_path(self) -> Path:
        if self._ca is None:
            raise ControlPlaneError("the control plane is not started")
        return self._ca.cert_path

    def configuration(self, user: str | None = None, groups: Sequence[str] = ()) -> k8s_client.Configuration:
        """A `kubernetes.client.Configuration` for the admin (default) or for `user` in `groups`."""
        creds = self._admin if user is None else self.user_credentials(user, groups)
        if creds is None:
            raise ControlPlaneError("the control plane is not started")
        config = k8s_client.Configuration()
        config.host = self.server_url
        config.ssl_ca_cert = str(self.ca_cert_path)
        config.cert_file = str(creds.cert_path)
        config.key_file = str(creds.key_path)
        config.verify_ssl = True
        return config

    def api_client(self, user: str | None = None, groups: Sequence[str] = ()) -> k8s_client.ApiClient:
        """A `kubernetes.client.ApiClient` acting as the admin (system:masters) or as `user` in `groups`.

        Users are client certificates, whose subject names are limited to 64 characters; for a service
        account use `service_account_client`, which authenticates with a real token.
        """
        return k8s_client.ApiClient(self.configuration(user, groups))

    def service_account_token(self, namespace: str, name: str, expiration_seconds: int = 3600) -> str:
        """A real bound token for service account `namespace/name` (TokenRequest API), creating the account
        if it does not exist. The namespace must exist. The server authenticates it as
        `system:serviceaccount:NS:NAME` in groups `system:serviceaccounts` and `system:serviceaccounts:NS`.
        """
        accounts = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        created = self.http.post(accounts, json={"metadata": {"name": name}})
        if created.status_code not in (201, 409):
            raise ControlPlaneError(f"creating service account {namespace}/{name}: {created.text}")
        response = self.http.post(
            f"{accounts}/{name}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": expiration_seconds}},
        )  # fmt: skip
        if response.status_code != 201:
            raise ControlPlaneError(f"token for {namespace}/{name}: {response.status_code} {response.text}")
        token: str = response.json()["status"]["token"]
        return token

    def service_account_client(self, namespace: str, name: str) -> k8s_client.ApiClient:
        """An ApiClient acting as service account `namespace/name` with a real token (see
        `service_account_token`): what the operator's pod would get. The namespace must exist."""
        config = self.configuration()
        config.cert_file = config.key_file = None
        config.api_key = {"authorization": self.service_account_token(namespace, name)}
        config.api_key_prefix = {"authorization": "Bearer"}
        return k8s_client.ApiClient(config)

    def write_kubeconfig(self, path: Path, user: str | None = None, groups: Sequence[str] = ()) -> Path:
        """Write a self-contained kubeconfig (certificates embedded) for the admin or `user` in `groups`."""
        creds = self._admin if user is None else self.user_credentials(user, groups)
        if creds is None:
            raise ControlPlaneError("the control plane is not started")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "dynamem",
                    "cluster": {
                        "server": self.server_url,
                        "certificate-authority-data": _b64_file(self.ca_cert_path),
                    },
                }
            ],
            "users": [
                {
                    "name": creds.user,
                    "user": {
                        "client-certificate-data": _b64_file(creds.cert_path),
                        "client-key-data": _b64_file(creds.key_path),
                    },
                }
            ],
            "contexts": [{"name": "dynamem", "context": {"cluster": "dynamem", "user": creds.user}}],
            "current-context": "dynamem",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.chmod(0o600)
        tmp.replace(path)
        return path

    def _http_client(self, creds: UserCredentials) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.ca_cert_path))
        context.load_cert_chain(str(creds.cert_path), str(creds.key_path))
        return httpx.Client(base_url=self.server_url, verify=context, timeout=10.0)

    @property
    def http(self) -> httpx.Client:
        """An httpx client bound to the server as the admin: handy for raw requests (`/version`, ...)."""
        if self._http is None:
            raise ControlPlaneError("the control plane is not started")
        return self._http

    # -- objects ---------------------------------------------------------------------------------------

    def install_crds(self, crds: Sequence[Mapping[str, Any]], timeout: float = 30.0) -> None:
        """Create (or replace) CustomResourceDefinitions and wait until all are Established."""
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        for crd in crds:
            response = self.http.post(path, json=crd)
            if response.status_code == 409:
                name = crd["metadata"]["name"]
                current = self.http.get(f"{path}/{name}")
                current.raise_for_status()
                body = {**crd, "metadata": {**crd["metadata"], **_resource_version(current.json())}}
                response = self.http.put(f"{path}/{name}", json=body)
            if response.status_code >= 400:
                raise ControlPlaneError(
                    f"installing CRD {crd.get('metadata', {}).get('name')} failed: "
                    f"{response.status_code} {response.text[:2000]}"
                )
        self.wait_for_crds([crd["metadata"]["name"] for crd in crds], timeout)

    def wait_for_crds(self, names: Iterable[str], timeout: float = 30.0) -> None:
        """Wait until every named CRD has condition Established=True and each served version lists."""
        pending = set(names)
        deadline = time.monotonic() + timeout
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        while pending:
            for name in sorted(pending):
                response = self.http.get(f"{path}/{name}")
                if (
                    response.status_code == 200
                    and _established(response.json())
                    and self._served(response.json())
                ):
                    pending.discard(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"CRDs not Established and served after {timeout:.0f}s: {sorted(pending)}"
                )
            time.sleep(0.05)

    def _served(self, crd: Mapping[str, Any]) -> bool:
        """Every served version of an Established CRD answers a list.

        Established says the names are accepted; the API server builds each version's storage (its watch
        cache) after that and answers 429 "storage is (re)initializing" until it is ready, so a client started
        at once (the KubeVirt simulator, the operator) would see its first lists refused.
        """
        spec = crd.get("spec", {})
        group, plural = spec.get("group"), spec.get("names", {}).get("plural")
        for version in spec.get("versions", []):
            if version.get("served"):
                # resourceVersion 0 is answered from the watch cache, as a watch is; a list with a limit is
                # sent to etcd while the cache starts (k8s.io/apiserver pkg/storage/cacher/delegator.go)
                path = f"/apis/{group}/{version['name']}/{plural}"
                listed = self.http.get(path, params={"resourceVersion": "0"})
                if listed.status_code != 200:
                    return False
        return True

    def create_node(
        self,
        name: str,
        memory: str = "8Gi",
        cpu: str = "8",
        labels: Mapping[str, str] | None = None,
        *,
        allocatable_memory: str | None = None,
        pods: str = "110",
    ) -> dict[str, Any]:
        """Create a Node object with capacity, allocatable and a Ready condition; returns the stored node.

        kwok plays its kubelet: it renews the Ready heartbeat and keeps capacity and allocatable as given.
        `allocatable_memory` defaults to `memory` (no system reservation).
        """
        node_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **(labels or {}),
        }
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        capacity = {"cpu": cpu, "memory": memory, "pods": pods}
        status = {
            "capacity": capacity,
            "allocatable": {**capacity, "memory": allocatable_memory or memory},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "dynamem test node (no kubelet)",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [{"type": "Hostname", "address": name}],
        }
        # Created with its status, as a kubelet registers its node: kwok initialises a node it sees without a
        # Ready condition with its own defaults (1Ti of memory), so the status must be there from the start.
        created = self.http.post(
            "/api/v1/nodes", json={"metadata": {"name": name, "labels": node_labels}, "status": status}
        )
        if created.status_code >= 400:
            raise ControlPlaneError(f"creating node {name} failed: {created.status_code} {created.text}")
        patched = self.http.patch(
            f"/api/v1/nodes/{name}/status",
            content=json.dumps({"status": status}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if patched.status_code >= 400:
            raise ControlPlaneError(
                f"writing node {name} status failed: {patched.status_code} {patched.text}"
            )
        node: dict[str, Any] = patched.json()
        return node


def _load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path) as stream:
        return [doc for doc in yaml.load_all(stream, Loader=loader) if isinstance(doc, dict)]


def _resource_version(obj: Mapping[str, Any]) -> dict[str, str]:
    return {"resourceVersion": str(obj["metadata"]["resourceVersion"])}


def _established(crd: Mapping[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
