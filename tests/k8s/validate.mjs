// Validates ppm's rendered Kubernetes manifests offline: every object
// against the Kubernetes (and Prometheus operator) JSON schemas of the
// kubernetes-models packages, and every workload against ppm's own rules
// (probes, resource requests and limits, a locked-down securityContext),
// plus the NetworkPolicies that must exist. Reads the rendered YAML of one
// or more overlays (files named on the command line) and prints one line
// per check and "N passed, N failed".
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

let passed = 0;
let failed = 0;
function check(ok, what) {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
}

async function model(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const path = group === "monitoring.coreos.com"
    ? `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`
    : `kubernetes-models/${group ? group + "/" : ""}${version}/${kind}`;
  const mod = await import(path);
  return mod[kind] ?? mod.default;
}

function workloadRules(name, obj) {
  const pod = obj.spec.template.spec;
  const podSec = pod.securityContext ?? {};
  check(podSec.runAsNonRoot === true, `${name}: pod runs as non-root`);
  check(pod.automountServiceAccountToken === false, `${name}: no service account token mounted`);
  for (const c of pod.containers) {
    const cn = `${name}/${c.name}`;
    const sec = c.securityContext ?? {};
    check(!!c.livenessProbe && !!c.readinessProbe, `${cn}: liveness and readiness probes`);
    check(!!c.resources?.requests?.cpu && !!c.resources?.requests?.memory, `${cn}: resource requests`);
    check(!!c.resources?.limits?.cpu && !!c.resources?.limits?.memory, `${cn}: resource limits`);
    check(sec.readOnlyRootFilesystem === true, `${cn}: read-only root filesystem`);
    check(sec.allowPrivilegeEscalation === false, `${cn}: no privilege escalation`);
    check(sec.privileged !== true && (sec.capabilities?.drop ?? []).includes("ALL"),
          `${cn}: unprivileged, all capabilities dropped`);
  }
}

for (const file of process.argv.slice(2)) {
  const docs = parseAllDocuments(readFileSync(file, "utf8")).map((d) => d.toJS()).filter(Boolean);
  check(docs.length > 0, `${file}: renders objects (${docs.length})`);
  const policies = new Set();
  const workloads = [];
  for (const obj of docs) {
    const name = `${file}: ${obj.kind}/${obj.metadata?.name}`;
    let Model;
    try {
      Model = await model(obj.apiVersion, obj.kind);
    } catch (e) {
      check(false, `${name}: no schema for ${obj.apiVersion} ${obj.kind}`);
      continue;
    }
    // kustomize wraps long base64 Secret values over lines; the API server's
    // decoder skips the newlines, the schema's "byte" pattern does not.
    if (obj.kind === "Secret" && obj.data)
      for (const k of Object.keys(obj.data)) obj.data[k] = String(obj.data[k]).replace(/\s+/g, "");
    try {
      new Model(obj).validate();
      check(true, `${name}: valid against the ${obj.apiVersion} schema`);
    } catch (e) {
      check(false, `${name}: ${e.message.split("\n").slice(0, 3).join(" ")}`);
    }
    if (obj.kind === "NetworkPolicy") policies.add(obj.metadata.name);
    if (["Deployment", "StatefulSet", "DaemonSet", "Job"].includes(obj.kind)) {
      workloads.push(obj.metadata.name);
      workloadRules(name, obj);
    }
  }
  check(policies.has("default-deny"), `${file}: default-deny NetworkPolicy`);
  check(policies.has("gateway-from-anywhere"), `${file}: only the gateway takes outside traffic`);
  check(policies.has("payment-to-stripe"), `${file}: only payment reaches the internet`);
  for (const svc of ["config", "rate", "payment", "metering", "gateway"])
    check(workloads.includes(svc), `${file}: workload ${svc} present`);
  const hpas = docs.filter((o) => o.kind === "HorizontalPodAutoscaler").map((o) => o.spec.scaleTargetRef.name);
  check(hpas.includes("gateway") && hpas.includes("rate"), `${file}: HPAs for gateway and rate`);
  const pdbs = docs.filter((o) => o.kind === "PodDisruptionBudget").length;
  check(pdbs >= 5, `${file}: a PodDisruptionBudget per service (${pdbs})`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
