#!/usr/bin/env python3
"""Request bodies for bench/run.sh: a Pod AdmissionReview mounting one existing block claim
(from tests/data), and ExtenderArgs for that pod with all 5,000 synthetic nodes (what
kube-scheduler sends with percentageOfNodesToScore: 100)."""
import json
import os

here = os.path.dirname(os.path.abspath(__file__))
review = json.load(open(os.path.join(here, "..", "tests", "data", "admission", "pod-create.json")))
review["request"]["namespace"] = "ns7"
pod = review["request"]["object"]
pod["metadata"]["namespace"] = "ns7"
pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "data-7"}}]
json.dump(review, open("/tmp/bench-pod-review.json", "w"))
names = [f"w{n:05d}" for n in range(5000)]
json.dump({"Pod": pod, "Nodes": None, "NodeNames": names}, open("/tmp/bench-extender-args.json", "w"))
