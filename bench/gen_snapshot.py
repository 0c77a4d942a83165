#!/usr/bin/env python3
"""Synthetic cluster snapshot for benchmarks (JSON List, fast to write and read).

Usage: python3 bench/gen_snapshot.py NODES PODS CLAIMS > big.json
Defaults: 5000 nodes, 150000 pods, 100000 block claims each bound, attached (one
VolumeAttachment per claim) and mounted by a pod; the other pods mount nothing.
"""
import json
import sys

nodes, pods, claims = (int(a) for a in (sys.argv[1:4] if len(sys.argv) > 3 else (5000, 150000, 100000)))
BLOCK = "csi.proxmox.sinextra.dev"
out = sys.stdout
out.write('{"apiVersion":"v1","kind":"List","metadata":{},"items":[\n')
first = True


def emit(obj):
    global first
    if not first:
        out.write(",\n")
    first = False
    out.write(json.dumps(obj, separators=(",", ":")))


emit({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "proxmox-lvm"},
      "provisioner": BLOCK, "volumeBindingMode": "WaitForFirstConsumer"})
for n in range(nodes):
    name = f"w{n:05d}"
    emit({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
          "spec": {"providerID": f"proxmox://lab/{1000 + n}"},
          "status": {"allocatable": {"cpu": "16", "memory": "64Gi"},
                     "conditions": [{"type": "Ready", "status": "True"}]}})
    emit({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode", "metadata": {"name": name},
          "spec": {"drivers": [{"name": BLOCK, "nodeID": name, "allocatable": {"count": 28}}]}})
for c in range(claims):
    node = f"w{c % nodes:05d}"
    ns = f"ns{c % 500}"
    emit({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"data-{c}", "namespace": ns},
          "spec": {"storageClassName": "proxmox-lvm", "volumeName": f"pv-{c}"}, "status": {"phase": "Bound"}})
    emit({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"pv-{c}"},
          "spec": {"csi": {"driver": BLOCK, "volumeHandle": f"lab/pve/local-lvm/vm-9999-pv-{c}"}}})
    emit({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {"name": f"csi-{c}"},
          "spec": {"attacher": BLOCK, "nodeName": node, "source": {"persistentVolumeName": f"pv-{c}"}},
          "status": {"attached": True}})
for p in range(pods):
    node = f"w{p % nodes:05d}"
    vols = [{"name": "data", "persistentVolumeClaim": {"claimName": f"data-{p}"}}] if p < claims else []
    emit({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pod-{p}", "namespace": f"ns{p % 500}"},
          "spec": {"nodeName": node, "volumes": vols,
                   "containers": [{"name": "app", "image": "app", "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}]},
          "status": {"phase": "Running"}})
out.write("\n]}\n")
