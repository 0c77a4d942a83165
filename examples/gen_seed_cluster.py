#!/usr/bin/env python3
"""Generates seed-cluster.yaml: the cluster of the scale runbook on 2026-06-05.

6 workers + 1 control plane; block PVCs per node as in the harden-proxmox-csi design
(node1 9, node2/3/4 12, node5 3, node6 21); GPU on node1 with a PreferNoSchedule taint;
32 GiB workers and a 48 GiB node1; proxmox-lvm, proxmox-lvm-encrypted, NFS and local-path
classes; three pending block claims of a new StatefulSet, one dormant claim (postiz scaled
to zero), a detaching attachment and a pod whose attachment is not created yet.

Run: python3 examples/gen_seed_cluster.py > examples/seed-cluster.yaml  (no dependencies)
"""
import json
import re
import sys

BLOCK = "csi.proxmox.sinextra.dev"
NFS = "nfs.csi.k8s.io"
GI = 1024 ** 3

items = []


def meta(name, namespace=None, **extra):
    m = {"name": name}
    if namespace:
        m["namespace"] = namespace
    m.update(extra)
    return m


def node(name, mem_gib, extra_labels=None, taints=None, gpus=0, vmid=0):
    alloc_mem = mem_gib * 1024 - 700  # MiB; kubelet reserve + eviction threshold
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    labels.update(extra_labels or {})
    capacity = {"cpu": "8" if mem_gib < 48 else "16", "memory": f"{mem_gib}Gi", "pods": "110"}
    allocatable = {"cpu": capacity["cpu"], "memory": f"{alloc_mem}Mi", "pods": "110"}
    if gpus:
        capacity["nvidia.com/gpu"] = allocatable["nvidia.com/gpu"] = str(gpus)
    spec = {"providerID": f"proxmox://homelab/{vmid}"}
    if taints:
        spec["taints"] = taints
    items.append({
        "apiVersion": "v1", "kind": "Node", "metadata": meta(name, labels=labels), "spec": spec,
        "status": {"capacity": capacity, "allocatable": allocatable,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]},
    })
    drivers = [{"name": NFS, "nodeID": name, "topologyKeys": None}]
    if not name.endswith("master"):
        drivers.insert(0, {"name": BLOCK, "nodeID": name, "allocatable": {"count": 28},
                           "topologyKeys": ["topology.kubernetes.io/region", "topology.kubernetes.io/zone"]})
    items.append({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode", "metadata": meta(name),
                  "spec": {"drivers": drivers}})


def storage_class(name, provisioner, default=False, mode="WaitForFirstConsumer"):
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    items.append({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                  "metadata": meta(name, annotations=annotations), "provisioner": provisioner,
                  "reclaimPolicy": "Retain", "volumeBindingMode": mode, "allowVolumeExpansion": True})


serial = [0]


def claim(ns, name, sc, size="10Gi", bound=True):
    """A claim (and its PV when bound); returns the PV name."""
    serial[0] += 1
    pv = f"pvc-{serial[0]:08x}-5eed-4c1a-9e2b-{serial[0]:012x}"
    spec = {"accessModes": ["ReadWriteOnce"], "storageClassName": sc,
            "resources": {"requests": {"storage": size}}}
    if bound:
        spec["volumeName"] = pv
    items.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(name, ns),
                  "spec": spec, "status": {"phase": "Bound" if bound else "Pending"}})
    if bound:
        driver = NFS if sc.startswith("nfs") else BLOCK
        handle = (f"homelab/pve/local-lvm/vm-9999-{pv}" if driver == BLOCK
                  else f"192.168.1.127#/mnt/nfs/{ns}-{name}##")
        items.append({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": meta(pv),
                      "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                               "persistentVolumeReclaimPolicy": "Retain", "storageClassName": sc,
                               "claimRef": {"namespace": ns, "name": name},
                               "csi": {"driver": driver, "volumeHandle": handle, "fsType": "ext4"}},
                      "status": {"phase": "Bound"}})
    return pv


def attachment(pv, node_name, attached=True, detaching=False):
    m = meta(f"csi-{pv[4:12]}{node_name[-1]}{'0' * 52}"[:68])
    if detaching:
        m["deletionTimestamp"] = "2026-06-05T09:12:00Z"
        m["finalizers"] = ["external-attacher/csi-proxmox-sinextra-dev"]
    items.append({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": m,
                  "spec": {"attacher": BLOCK, "nodeName": node_name, "source": {"persistentVolumeName": pv}},
                  "status": {"attached": attached}})


OWNER_API = {"StatefulSet": "apps/v1", "ReplicaSet": "apps/v1", "DaemonSet": "apps/v1", "Job": "batch/v1",
             "Node": "v1"}


def pod(ns, name, node_name, claims=(), mem="512Mi", limit=None, cpu="100m", phase="Running", init=None,
        owner="StatefulSet"):
    resources = {"requests": {"cpu": cpu, "memory": mem}}
    if limit:
        resources["limits"] = {"memory": limit}
    spec = {"containers": [{"name": "app", "image": f"registry.local/{name.split('-')[0]}:stable",
                            "resources": resources}],
            "volumes": [{"name": f"data{i}", "persistentVolumeClaim": {"claimName": c}}
                        for i, c in enumerate(claims)]}
    if init:
        spec["initContainers"] = [{"name": "init", "image": "busybox", "resources": {"requests": {"memory": init}}}]
    if node_name:
        spec["nodeName"] = node_name
    status = {"phase": phase}
    if not node_name:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
    m = meta(name, ns)
    if owner:
        # Who places the pod again after an eviction (a drain refuses pods nobody would).
        owner_name = node_name if owner == "Node" else name.rsplit("-", 1)[0]
        m["ownerReferences"] = [{"apiVersion": OWNER_API[owner], "kind": owner, "name": owner_name,
                                 "uid": f"uid-{owner.lower()}-{owner_name}", "controller": True}]
    items.append({"apiVersion": "v1", "kind": "Pod", "metadata": m, "spec": spec, "status": status})


# --- nodes -------------------------------------------------------------------------------
node("k8s-master", 32, {"node-role.kubernetes.io/control-plane": ""}, vmid=200,
     taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
node("k8s-node1", 48, {"nvidia.com/gpu.present": "true"}, gpus=1, vmid=201,
     taints=[{"key": "nvidia.com/gpu", "value": "true", "effect": "PreferNoSchedule"}])
for i in range(2, 7):
    node(f"k8s-node{i}", 32, vmid=200 + i)

storage_class("proxmox-lvm", BLOCK)
storage_class("proxmox-lvm-encrypted", BLOCK)
storage_class("nfs-truenas", NFS, default=True, mode="Immediate")
storage_class("local-path", "rancher.io/local-path")

# --- block workloads per node (counts from the 2026-06-05 live state) ----------------------
APPS = ["vaultwarden", "ntfy", "uptime-kuma", "navidrome", "actualbudget", "freshrss", "stirling-pdf",
        "rybbit", "dolt", "pg-cluster", "mysql-standalone", "immich-pg", "redis", "prometheus",
        "alertmanager", "loki", "vault", "technitium", "mailserver", "paperless", "forgejo", "matrix",
        "n8n", "tandoor", "speedtest", "hackmd", "changedetection", "send", "openclaw", "servarr"]
COUNTS = {"k8s-node1": 9, "k8s-node2": 12, "k8s-node3": 12, "k8s-node4": 12, "k8s-node5": 3, "k8s-node6": 21}
MEM = {"k8s-node1": "2Gi", "k8s-node2": "1536Mi", "k8s-node3": "1280Mi", "k8s-node4": "1536Mi",
       "k8s-node5": "1Gi", "k8s-node6": "896Mi"}
app = 0
for node_name, count in COUNTS.items():
    for k in range(count):
        name = APPS[app % len(APPS)]
        ns = name
        sc = "proxmox-lvm-encrypted" if app % 5 in (0, 2, 3) else "proxmox-lvm"
        pvc = f"{name}-data-{app}"
        pv = claim(ns, pvc, sc, size=f"{(app % 4 + 1) * 5}Gi")
        app += 1
        if node_name == "k8s-node5" and k == 2:
            # The pod moved away; its old attachment is still detaching and still holds a LUN.
            attachment(pv, node_name, attached=True, detaching=True)
            continue
        if node_name == "k8s-node4" and k == 0:
            # Just scheduled: the attach-detach controller has not created the attachment yet.
            pod(ns, f"{name}-0", node_name, [pvc], mem=MEM[node_name], phase="Pending")
            continue
        attachment(pv, node_name)
        pod(ns, f"{name}-{k}", node_name, [pvc], mem=MEM[node_name], limit="2Gi",
            init="256Mi" if k % 3 == 0 else None)

# --- GPU and memory-heavy workloads on node1 ------------------------------------------------
for name, mem in [("frigate", "6Gi"), ("immich-ml", "5Gi"), ("whisper", "3Gi"), ("llama-cpp", "6Gi")]:
    pod(name, f"{name}-0", "k8s-node1", mem=mem, limit=mem, cpu="1")

# --- NFS workloads (no attachments: NFS is not attached) -----------------------------------
for i, name in enumerate(["immich", "nextcloud", "jellyfin", "audiobookshelf", "calibre", "syncthing",
                          "homepage", "grafana"]):
    pvc = f"{name}-media"
    claim(name, pvc, "nfs-truenas", size="100Gi")
    pod(name, f"{name}-{i:x}5d9-x{i}", f"k8s-node{2 + i % 5}", [pvc], mem="2Gi", limit="4Gi", owner="ReplicaSet")

# --- per-node daemons ----------------------------------------------------------------------
for n in ["k8s-master"] + list(COUNTS):
    pod("kube-system", f"calico-node-{n[-1]}x", n, mem="256Mi", owner="DaemonSet")
    if n != "k8s-master":
        pod("csi-proxmox", f"proxmox-csi-node-{n[-1]}q", n, mem="64Mi", owner="DaemonSet")
pod("kube-system", "kube-apiserver-k8s-master", "k8s-master", mem="1Gi", cpu="250m", owner="Node")

# --- pending, dormant and finished ---------------------------------------------------------
for i in range(3):  # a new StatefulSet whose claims wait for a node (WaitForFirstConsumer)
    claim("immich", f"data-elements-{i}", "proxmox-lvm", size="20Gi", bound=False)
    pod("immich", f"elements-{i}", None, [f"data-elements-{i}"], mem="1Gi", limit="2Gi")
claim("postiz", "postiz-uploads", "proxmox-lvm")  # bound, scaled to zero: dormant
backup = claim("backup", "restic-cache", "proxmox-lvm")
pod("backup", "restic-28671840-vx7kq", "k8s-node3", ["restic-cache"], mem="512Mi", phase="Succeeded",
    owner="Job")


# --- a small YAML emitter (block style, quoted strings) so the script needs no packages -----
PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    if PLAIN.match(v) and v.lower() not in RESERVED:
        return v
    return json.dumps(v)


def emit(v, indent, out):
    pad = "  " * indent
    if isinstance(v, dict):
        if not v:
            out[-1] += " {}"
            return
        for k, x in v.items():
            if isinstance(x, (dict, list)) and x:
                out.append(f"{pad}{scalar(k)}:")
                emit(x, indent + 1, out)
            else:
                out.append(f"{pad}{scalar(k)}: {scalar(x) if not isinstance(x, (dict, list)) else ('{}' if isinstance(x, dict) else '[]')}")
    else:
        for x in v:
            if isinstance(x, dict) and x:
                sub = []
                emit(x, indent + 1, sub)
                first = sub[0].lstrip()
                out.append(f"{pad}- {first}")
                out.extend(sub[1:])
            else:
                out.append(f"{pad}- {scalar(x)}")


lines = ["# Generated by examples/gen_seed_cluster.py: the seed cluster on 2026-06-05.",
         "apiVersion: v1", "kind: List", "metadata: {}", "items:"]
emit(items, 0, lines)
sys.stdout.write("\n".join(lines) + "\n")
