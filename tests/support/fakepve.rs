//! fakepve (PyPI), started through its Python API by `tests/fakepve/harness.py` and driven
//! with one JSON command per line.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout},
};

pub struct FakePve {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pub url: String,
    pub ca: String,
    pub fingerprint: String,
    pub token: String,
}

impl FakePve {
    pub async fn start() -> Self {
        let harness = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fakepve/harness.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(harness)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs (the test command installs fakepve)");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next_line()
            .await
            .unwrap()
            .expect("fakepve started (pip install 'fakepve[crypto]')");
        let hello: Value = serde_json::from_str(&first).unwrap();
        let s = |k: &str| hello[k].as_str().unwrap().to_owned();
        Self {
            url: s("url"),
            ca: s("ca"),
            fingerprint: s("fingerprint"),
            token: s("token"),
            _child: child,
            stdin,
            lines,
        }
    }

    /// Sends one command; returns its answer (an `{"error": …}` answer fails the test).
    pub async fn cmd(&mut self, command: Value) -> Value {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        let line = self.lines.next_line().await.unwrap().expect("harness answered");
        let answer: Value = serde_json::from_str(&line).unwrap();
        assert!(answer.get("error").is_none(), "{command}: {answer}");
        answer
    }

    /// A template VM 2000 on pve1 with a boot disk on local-lvm.
    pub async fn add_template(&mut self) {
        self.cmd(
            json!({"op": "add_vm", "vmid": 2000, "name": "k8s-template", "template": true,
            "config": {"scsi0": "local-lvm:base-2000-disk-0,size=32G", "memory": "2048", "cores": 2,
                       "ide2": "local-lvm:vm-2000-cloudinit,media=cdrom", "scsihw": "virtio-scsi-single"}}),
        )
        .await;
    }

    pub async fn vms(&mut self) -> Vec<Value> {
        self.cmd(json!({"op": "vms"})).await.as_array().unwrap().clone()
    }

    /// Requests seen: (method, path, body).
    pub async fn requests(&mut self) -> Vec<(String, String, String)> {
        let all = self.cmd(json!({"op": "requests"})).await;
        all.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let s = |i: usize| {
                    r[i].as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| r[i].to_string())
                };
                (s(0), s(1), s(2))
            })
            .collect()
    }
}
