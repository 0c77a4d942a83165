#!/usr/bin/env python3
"""Time from a trigger-crossing admission to headroom's first Proxmox request, against fakepve.

Usage: python3 bench/trigger_to_call.py [RUNS]   (default 5; needs target/release/headroom and
fakepve: pip install 'fakepve[crypto]>=0.5,<0.6')

Each run starts a fresh fakepve (a template VM 2000 on pve1) and `headroom serve` on a snapshot
of 2 workers at 22 block volumes each (4 free slots under the soft cap of 24: freeBlockSlots
`below: 4` does not fire). Once headroom is ready and its start-up reads of Proxmox are done,
one PVC CREATE AdmissionReview for a new block claim goes to /validate over an open TLS
connection that presents the API server's client certificate (`tls.clientCAFile` is set, so the
review is vouched for: demand at once, as a watched PVC would be within milliseconds; an
anonymous review is no demand until the watch shows its claim). Admitting it leaves 3 free
slots: the trigger fires on the projection, the planner wakes, the actuator reads Proxmox and
clones. fakepve stamps every request it receives; printed
per run: the admission's round trip, then the first request after it was sent and the clone POST,
both measured from the moment before the admission was sent. The default plan interval (10 s)
stays: only the admission can make the call come sooner.
"""
import asyncio
import http.client
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

from fakepve import FakePve
from fakepve.certs import make_cert

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "target", "release", "headroom")
TOKEN_ID, TOKEN_SECRET = "headroom@pve!bench", "0b7f3c1e-2a4d-4e6f-8a9b-1c2d3e4f5a6b"


class StampedRequests(list):
    """fakepve's request log, with the monotonic time each request arrived."""

    def __init__(self):
        super().__init__()
        self.at = []

    def append(self, item):
        self.at.append(time.monotonic())
        super().append(item)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(path):
    with open(path, "w") as out:
        subprocess.run([sys.executable, os.path.join(HERE, "gen_snapshot.py"), "2", "44", "44"], stdout=out, check=True)


async def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def one_run(tmp, review):
    pve = FakePve(user="root@pam", password="secret", host="127.0.0.1", port=0)
    pve.apitokens[TOKEN_ID] = TOKEN_SECRET
    log = StampedRequests()
    pve.requests = log
    certfile, keyfile, _ = make_cert(tmp, hosts=("127.0.0.1", "localhost"))
    await pve.start(certfile, keyfile)
    pve.add_vm(2000, "k8s-template", node="pve1", status="stopped", template=True,
               config={"scsi0": "local-lvm:base-2000-disk-0,size=32G", "memory": "2048", "cores": 2,
                       "ide2": "local-lvm:vm-2000-cloudinit,media=cdrom", "scsihw": "virtio-scsi-single"})
    token = os.path.join(tmp, "token")
    open(token, "w").write(f"{TOKEN_ID}={TOKEN_SECRET}")
    config = os.path.join(tmp, "config.yaml")
    open(config, "w").write(
        f"proxmox:\n  url: {pve.url}\n  tokenFile: {token}\n  caFile: {certfile}\n"
        "  hosts: [{name: pve1, template: 2000, storage: local-lvm}]\n"
        "  vm: {memoryMiB: 2048}\n  hostMemoryReserveMiB: 512\n"
        f"tls:\n  clientCAFile: {os.path.join(tmp, 'certs', 'ca.crt')}\n  allowedClientNames: [kube-apiserver]\n")
    listen, admin = free_port(), free_port()
    serve = subprocess.Popen(
        [BIN, "serve", "--snapshot", os.path.join(tmp, "cluster.json"), "--config", config,
         "--tls-cert", os.path.join(tmp, "certs", "tls.crt"), "--tls-key", os.path.join(tmp, "certs", "tls.key"),
         "--listen", f"127.0.0.1:{listen}", "--admin-listen", f"127.0.0.1:{admin}"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "serve.log"), "w"))
    try:
        def ready():
            try:
                c = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
                c.request("GET", "/readyz")
                return c.getresponse().status == 200
            except OSError:
                return False
        deadline = time.monotonic() + 30
        while not ready():
            if time.monotonic() > deadline or serve.poll() is not None:
                raise SystemExit("headroom did not become ready; see " + os.path.join(tmp, "serve.log"))
            await asyncio.sleep(0.05)
        # Start-up reads of Proxmox (inventory, ghost disks) are over once the log is quiet.
        await wait_for(lambda: log.at and time.monotonic() - log.at[-1] > 1.0, 30, "start-up reads")
        ctx = ssl.create_default_context(cafile=os.path.join(tmp, "certs", "ca.crt"))
        ctx.check_hostname = False  # the chain is verified; the SANs are the Service's names
        ctx.load_cert_chain(os.path.join(tmp, "certs", "kube-apiserver.crt"),
                            os.path.join(tmp, "certs", "kube-apiserver.key"))
        conn = http.client.HTTPSConnection("127.0.0.1", listen, context=ctx, timeout=10)
        conn.connect()
        seen = len(log)
        body = json.dumps(review)
        sent = time.monotonic()
        conn.request("POST", "/validate", body, {"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())
        answered = time.monotonic()
        assert answer["response"]["allowed"], answer
        await wait_for(lambda: len(log) > seen, 10, "a Proxmox request")
        first = log.at[seen] - sent
        first_call = "{} {}".format(*log[seen][:2])
        await wait_for(lambda: any(r[0] == "POST" and r[1].endswith("/clone") for r in log[seen:]), 10, "the clone")
        clone = next(at for at, r in zip(log.at[seen:], log[seen:]) if r[0] == "POST" and r[1].endswith("/clone")) - sent
        return answered - sent, first, first_call, clone
    finally:
        serve.terminate()
        serve.wait(10)
        await pve.stop()


async def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} missing: cargo build --release")
    with open(os.path.join(ROOT, "tests", "data", "admission", "pvc-create.json")) as f:
        review = json.load(f)
    results = []
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="headroom-trigger-") as tmp:
            snapshot(os.path.join(tmp, "cluster.json"))
            subprocess.run([BIN, "certs", "--service", "headroom", "--namespace", "headroom", "--out",
                            os.path.join(tmp, "certs"), "--client", "kube-apiserver"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            r = await one_run(tmp, review)
            results.append(r)
            print(f"run {i + 1}: admission answered in {r[0] * 1000:.1f} ms; first Proxmox request "
                  f"({r[2]}) {r[1] * 1000:.1f} ms after it was sent; clone POST at {r[3] * 1000:.1f} ms")
    for name, k in (("first request", 1), ("clone POST", 3)):
        xs = [r[k] * 1000 for r in results]
        print(f"{name}: median {statistics.median(xs):.1f} ms, max {max(xs):.1f} ms over {len(xs)} runs")


asyncio.run(main())
