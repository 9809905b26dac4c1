// validate.mjs: validates rendered Kubernetes objects offline, for
// tests/integration/k8s_manifests_test.sh. Input: JSON files, each an array of objects (what
// render.mjs prints). Three layers:
//
// 1. Schema: each object's model class from the npm package kubernetes-models (generated from the
//    Kubernetes OpenAPI schemas), chosen by apiVersion and kind; `new Model(obj).validate()`
//    throws on a wrong type, a missing required field or a bad enum value. An apiVersion/kind
//    the package does not have is an error.
// 2. Unknown fields (strict, as the API server's fieldValidation=Strict and kubeconform -strict):
//    the Kubernetes schemas allow extra properties, so `validate()` alone accepts a misspelled
//    field. The same compiled schema function is run on a copy of the object whose every
//    mapping is a Proxy that records which properties the validator reads: the validator reads
//    each property its schema defines (`data.replicas`) and enumerates the keys of free-form maps
//    (labels, resources.limits), so a key that was neither read nor enumerated is not in the
//    schema: an unknown field, reported with its path.
// 3. References between the objects, which no schema checks and which break a deployment
//    silently: workload selectors match their own template; Service and PodDisruptionBudget
//    selectors match a workload; Service targetPorts and probe ports name a container port;
//    volume mounts name a volume; ConfigMaps referenced exist; a StatefulSet's serviceName is a
//    headless Service; the prometheus.io/port annotation is the container port named "metrics".
//    And the project's rules for every cellserve pod: runAsNonRoot with a non-zero user,
//    resources on every container, readiness and liveness probes, a preStop hook and a
//    termination grace period.
//
// Usage: node validate.mjs [--expect-invalid] FILE.json...
//   exit 0 when every object is valid (with --expect-invalid: when at least one error is found,
//   the self-test of the test); 1 otherwise; 2 bad usage. Errors go to stdout, one per line.
// kubernetes-models comes from $CELLSERVE_NODE_MODULES (the test installs it with npm).
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const nodeModules = process.env.CELLSERVE_NODE_MODULES;
if (!nodeModules) {
  console.error("validate.mjs: set CELLSERVE_NODE_MODULES to the node_modules folder with kubernetes-models");
  process.exit(2);
}
const modelsRoot = path.join(nodeModules, "kubernetes-models");

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// ---- 1 and 2: schema and unknown fields ---------------------------------------------------------

// kubernetes-models/<group>/<version>/<Kind>.js, core group: kubernetes-models/v1/<Kind>.js.
function modelFile(apiVersion, kind) {
  if (typeof apiVersion !== "string" || !/^([a-z0-9.-]+\/)?v[0-9a-z]+$/.test(apiVersion)) return null;
  if (typeof kind !== "string" || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) return null;
  const file = path.join(modelsRoot, ...apiVersion.split("/"), `${kind}.js`);
  return fs.existsSync(file) ? file : null;
}

const modelCache = new Map();
async function loadModel(apiVersion, kind) {
  const file = modelFile(apiVersion, kind);
  if (!file) return null;
  if (!modelCache.has(file)) {
    const mod = await import(pathToFileURL(file).href);
    const Model = mod[kind];
    // The model module imports its compiled schema: ...from"../../_schemas/IoK8sApiAppsV1Deployment.js"
    const src = fs.readFileSync(file, "utf8");
    const m = src.match(/from\s*"((?:\.\.\/)+_schemas\/[A-Za-z0-9]+\.js)"/);
    if (!Model || !m) throw new Error(`validate.mjs: unexpected layout of ${file} (kubernetes-models changed?)`);
    const schema = await import(new URL(m[1], pathToFileURL(file)).href);
    modelCache.set(file, { Model, validate: schema.validate });
  }
  return modelCache.get(file);
}

// A deep copy whose mappings and lists are Proxies recording reads (get/has) and enumeration.
function tracked(value, where, records) {
  if (value === null || typeof value !== "object") return value;
  const rec = { where, value, read: new Set(), enumerated: false, list: Array.isArray(value) };
  records.push(rec);
  const copy = rec.list
    ? value.map((v, i) => tracked(v, `${where}/${i}`, records))
    : Object.fromEntries(Object.entries(value).map(([k, v]) => [k, tracked(v, `${where}/${k}`, records)]));
  return new Proxy(copy, {
    get(t, k, r) {
      if (typeof k === "string") rec.read.add(k);
      return Reflect.get(t, k, r);
    },
    has(t, k) {
      if (typeof k === "string") rec.read.add(k);
      return Reflect.has(t, k);
    },
    ownKeys(t) {
      rec.enumerated = true;
      return Reflect.ownKeys(t);
    },
  });
}

async function checkSchema(obj, report) {
  const model = await loadModel(obj.apiVersion, obj.kind);
  if (!model) {
    report(`unknown apiVersion/kind ${obj.apiVersion}/${obj.kind} (not in kubernetes-models)`);
    return;
  }
  try {
    new model.Model(obj).validate();
  } catch (e) {
    report(`schema: ${e.message}`);
  }
  const records = [];
  model.validate(tracked(obj, "", records));
  // Records are in depth-first order: report an unknown field, not every field below it.
  const unknown = [];
  for (const r of records) {
    if (r.list || r.enumerated || unknown.some((u) => r.where.startsWith(`${u}/`))) continue;
    for (const k of Object.keys(r.value)) {
      if (r.read.has(k)) continue;
      unknown.push(`${r.where}/${k}`);
      report(`unknown field ${r.where}/${k}`);
    }
  }
}

// ---- 3: references and the project's rules ------------------------------------------------------

const WORKLOADS = new Set(["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"]);
const subset = (sel, labels) => Object.entries(sel ?? {}).every(([k, v]) => labels?.[k] === v);
const allContainers = (spec) => [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])];

function checkReferences(objects, reportFor) {
  const ns = (o) => o.metadata?.namespace ?? "";
  const workloads = objects.filter((o) => WORKLOADS.has(o.kind) && o.spec?.template);
  const sameNs = (o, list) => list.filter((w) => ns(w) === ns(o));
  const configMaps = new Set(objects.filter((o) => o.kind === "ConfigMap").map((o) => `${ns(o)}/${o.metadata.name}`));

  for (const o of objects) {
    const report = reportFor(o);
    if (o.kind === "Service" && o.spec?.selector) {
      const pods = sameNs(o, workloads).filter((w) => subset(o.spec.selector, w.spec.template.metadata?.labels));
      if (pods.length === 0) report(`selector ${JSON.stringify(o.spec.selector)} matches no workload`);
      for (const p of o.spec.ports ?? []) {
        if (typeof p.targetPort !== "string") continue;
        const named = pods.some((w) => allContainers(w.spec.template.spec).some((c) => (c.ports ?? []).some((cp) => cp.name === p.targetPort)));
        if (pods.length && !named) report(`port ${p.name}: targetPort ${p.targetPort} is no container port of the selected pods`);
      }
    }
    if (o.kind === "PodDisruptionBudget") {
      const sel = o.spec?.selector?.matchLabels;
      if (!sel || !sameNs(o, workloads).some((w) => subset(sel, w.spec.template.metadata?.labels))) {
        report(`selector matches no workload`);
      }
    }
    if (!WORKLOADS.has(o.kind) || !o.spec?.template) continue;

    const t = o.spec.template;
    const spec = t.spec ?? {};
    if (o.spec.selector?.matchLabels && !subset(o.spec.selector.matchLabels, t.metadata?.labels)) {
      report(`spec.selector does not match the pod template's labels`);
    }
    if (o.kind === "StatefulSet") {
      const svc = objects.find((s) => s.kind === "Service" && ns(s) === ns(o) && s.metadata.name === o.spec.serviceName);
      if (!svc) report(`serviceName ${o.spec.serviceName} is no Service here`);
      else if (svc.spec?.clusterIP !== "None") report(`serviceName ${o.spec.serviceName} is not a headless Service`);
    }
    const volumes = new Set([
      ...(spec.volumes ?? []).map((v) => v.name),
      ...(o.kind === "StatefulSet" ? (o.spec.volumeClaimTemplates ?? []).map((c) => c.metadata?.name) : []),
    ]);
    for (const v of spec.volumes ?? []) {
      if (v.configMap && !v.configMap.optional && !configMaps.has(`${ns(o)}/${v.configMap.name}`)) {
        report(`volume ${v.name}: ConfigMap ${v.configMap.name} is not here`);
      }
    }
    for (const c of allContainers(spec)) {
      const where = `container ${c.name}`;
      const mounts = new Set();
      for (const m of c.volumeMounts ?? []) {
        if (!volumes.has(m.name)) report(`${where}: volumeMount ${m.name} names no volume`);
        if (mounts.has(m.mountPath)) report(`${where}: two mounts at ${m.mountPath}`);
        mounts.add(m.mountPath);
      }
      for (const e of c.env ?? []) {
        const ref = e.valueFrom?.configMapKeyRef;
        if (ref && !configMaps.has(`${ns(o)}/${ref.name}`)) report(`${where}: env ${e.name}: ConfigMap ${ref.name} is not here`);
      }
      const ports = new Set((c.ports ?? []).map((p) => p.name).filter(Boolean));
      for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const port = c[kind]?.tcpSocket?.port ?? c[kind]?.httpGet?.port ?? c[kind]?.grpc?.port;
        if (typeof port === "string" && !ports.has(port)) report(`${where}: ${kind} port ${port} is no container port`);
      }
      if (!c.resources?.requests || !c.resources?.limits) report(`${where}: needs resources.requests and resources.limits`);
    }

    // cellserve's own rules (docs/OPERATIONS.md).
    const sc = spec.securityContext ?? {};
    if (sc.runAsNonRoot !== true || !(sc.runAsUser > 0)) report(`pod securityContext: runAsNonRoot: true and a non-zero runAsUser`);
    if (!(spec.terminationGracePeriodSeconds > 0)) report(`terminationGracePeriodSeconds must be set`);
    for (const c of spec.containers ?? []) {
      if (!c.readinessProbe || !c.livenessProbe) report(`container ${c.name}: needs readinessProbe and livenessProbe`);
      if (!c.lifecycle?.preStop) report(`container ${c.name}: needs a preStop hook (drain)`);
    }
    const ann = t.metadata?.annotations ?? {};
    if (ann["prometheus.io/scrape"] === "true") {
      const metrics = (spec.containers ?? []).flatMap((c) => c.ports ?? []).find((p) => p.name === "metrics");
      if (!metrics) report(`prometheus.io/scrape without a container port named metrics`);
      else if (String(metrics.containerPort) !== ann["prometheus.io/port"]) {
        report(`prometheus.io/port ${ann["prometheus.io/port"]} is not the metrics port ${metrics.containerPort}`);
      }
    }
  }
}

// ---- main ---------------------------------------------------------------------------------------

const args = process.argv.slice(2);
const expectInvalid = args[0] === "--expect-invalid";
const files = expectInvalid ? args.slice(1) : args;
if (files.length === 0 || files.some((f) => f.startsWith("--"))) {
  console.error("usage: node validate.mjs [--expect-invalid] FILE.json...");
  process.exit(2);
}

let errors = 0;
for (const file of files) {
  let objects;
  try {
    objects = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    console.log(`${file}: cannot read: ${e.message}`);
    errors++;
    continue;
  }
  if (!Array.isArray(objects) || objects.length === 0) {
    console.log(`${file}: not a non-empty JSON array of objects`);
    errors++;
    continue;
  }
  const name = (o) => `${o?.kind ?? "?"}/${o?.metadata?.namespace ? o.metadata.namespace + "/" : ""}${o?.metadata?.name ?? "?"}`;
  const reportFor = (o) => (msg) => {
    console.log(`${file}: ${name(o)}: ${msg}`);
    errors++;
  };
  for (const o of objects) {
    if (!isObject(o)) {
      reportFor(o)("not an object");
      continue;
    }
    await checkSchema(o, reportFor(o));
  }
  checkReferences(objects.filter(isObject), reportFor);
  if (!expectInvalid) console.log(`${file}: ${objects.length} objects checked`);
}

if (expectInvalid) {
  if (errors === 0) {
    console.log("validate.mjs: expected an error, found none");
    process.exit(1);
  }
  process.exit(0);
}
if (errors) {
  console.log(`validate.mjs: ${errors} error(s)`);
  process.exit(1);
}
