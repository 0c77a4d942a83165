//! deploy/: every overlay renders with `kubectl kustomize` and validates strictly against the
//! Kubernetes schema (`kubernetes-validate --strict`, PyPI); the pieces say what they should.

use std::{path::Path, process::Command};

use base64::Engine;
use serde_json::Value;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
const BIN: &str = env!("CARGO_BIN_EXE_headroom");

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (./scripts/test.sh installs what the tests need)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Renders an overlay of a fresh copy of deploy/ (self-signed certificates generated first),
/// validates it strictly, and returns its documents.
fn render(overlay: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(DEPLOY), dir.path());
    let overlay_dir = dir.path().join("overlays").join(overlay);
    if overlay == "self-signed" {
        run(Command::new(overlay_dir.join("generate.sh")).env("HEADROOM", BIN));
    }
    let yaml = run(Command::new("kubectl").arg("kustomize").arg(&overlay_dir));
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &yaml).unwrap();
    run(Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", "1.33.0"])
        .arg(&file));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    // Keep the copy (and its private key) only as long as the test.
    drop(dir);
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_self_signed_overlay_carries_the_ca_of_its_certificate() {
    let docs = render("self-signed");
    let secret = find(&docs, "Secret", "headroom-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    // kustomize wraps the Secret's base64 across lines.
    let ca: String = secret["data"]["ca.crt"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect();
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
        let hook = &find(&docs, kind, "headroom")["webhooks"][0];
        assert_eq!(
            hook["clientConfig"]["caBundle"],
            ca.as_str(),
            "{kind}: caBundle is the CA that signed tls.crt"
        );
        assert_eq!(hook["clientConfig"]["service"]["namespace"], "headroom-system");
        assert_eq!(hook["failurePolicy"], "Ignore");
        assert_eq!(hook["sideEffects"], "NoneOnDryRun");
    }
    let pem = base64::engine::general_purpose::STANDARD.decode(&ca).unwrap();
    assert!(
        String::from_utf8(pem)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
}

#[test]
fn the_cert_manager_overlay_injects_the_ca() {
    let docs = render("cert-manager");
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
        let hook = find(&docs, kind, "headroom");
        assert_eq!(
            hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], "headroom-system/headroom-tls",
            "{kind}"
        );
    }
    let cert = find(&docs, "Certificate", "headroom-tls");
    assert_eq!(cert["spec"]["secretName"], "headroom-tls");
    assert!(
        cert["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "headroom.headroom-system.svc")
    );
}

#[test]
fn the_base_is_hardened_and_ships_the_rules_and_the_scheduler_config() {
    let docs = render("cert-manager");
    let deployment = find(&docs, "Deployment", "headroom");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(
        find(&docs, "PodDisruptionBudget", "headroom")["spec"]["maxUnavailable"],
        1
    );

    // The PrometheusRule carries exactly the unit-tested rule file.
    let rules: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(Path::new(DEPLOY).join("prometheus/rules.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        find(&docs, "PrometheusRule", "headroom")["spec"],
        rules,
        "deploy/base/prometheusrule.yaml drifted from rules.yaml"
    );

    // The shipped config is one headroom accepts.
    let config = find(&docs, "ConfigMap", "headroom-config")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), config).unwrap();
    run(Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(file.path()));
    let scheduler =
        find(&docs, "ConfigMap", "headroom-scheduler-config")["data"]["kube-scheduler-config.yaml"]
            .as_str()
            .unwrap()
            .to_owned();
    let scheduler: Value = serde_saphyr::from_str(&scheduler).unwrap();
    let extender = &scheduler["extenders"][0];
    assert_eq!(extender["nodeCacheCapable"], true);
    assert_eq!(
        extender["managedResources"][0]["name"],
        "headroom.io/block-volumes"
    );
    assert_eq!(extender["managedResources"][0]["ignoredByScheduler"], true);
    assert_eq!(scheduler["percentageOfNodesToScore"], 100);
}

/// The control-plane files for client authentication agree with the webhooks they are for and
/// with the file names `headroom certs --client` writes.
#[test]
fn the_apiserver_presents_its_client_certificate_to_the_webhook_service() {
    let docs = render("cert-manager");
    let data = &find(&docs, "ConfigMap", "headroom-apiserver-config")["data"];
    let parse = |key: &str| -> Value { serde_saphyr::from_str(data[key].as_str().unwrap()).unwrap() };
    let admission = parse("admission-config.yaml");
    let kubeconfig = parse("webhook-kubeconfig.yaml");

    let mut plugins: Vec<&str> = admission["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(
                p["configuration"]["kubeConfigFile"],
                "/etc/kubernetes/headroom/webhook-kubeconfig.yaml"
            );
            p["name"].as_str().unwrap()
        })
        .collect();
    plugins.sort();
    assert_eq!(
        plugins,
        ["MutatingAdmissionWebhook", "ValidatingAdmissionWebhook"]
    );

    // kube-apiserver picks the user whose name is the Service's DNS name (port 443 implied).
    let user = &kubeconfig["users"][0];
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
        let service = &find(&docs, kind, "headroom")["webhooks"][0]["clientConfig"]["service"];
        assert_eq!(service["port"], 443);
        assert_eq!(
            user["name"].as_str().unwrap(),
            format!(
                "{}.{}.svc",
                service["name"].as_str().unwrap(),
                service["namespace"].as_str().unwrap()
            ),
            "{kind}"
        );
    }
    let stem = headroom::certs::file_stem("kube-apiserver");
    assert_eq!(
        user["user"]["client-certificate"],
        format!("/etc/kubernetes/headroom/{stem}.crt")
    );
    assert_eq!(
        user["user"]["client-key"],
        format!("/etc/kubernetes/headroom/{stem}.key")
    );

    // The scheduler's (commented) client certificate lines name what `certs` writes.
    let scheduler =
        find(&docs, "ConfigMap", "headroom-scheduler-config")["data"]["kube-scheduler-config.yaml"]
            .as_str()
            .unwrap();
    let stem = headroom::certs::file_stem("system:kube-scheduler");
    assert!(scheduler.contains(&format!("# certFile: /etc/kubernetes/headroom/{stem}.crt")));
    assert!(scheduler.contains(&format!("# keyFile: /etc/kubernetes/headroom/{stem}.key")));
}
