// render.mjs: renders a kustomization offline, for tests/integration/k8s_manifests_test.sh, where
// there may be no kubectl/kustomize binary. It implements only the subset of kustomize that
// deploy/k8s uses, and refuses any other field rather than render it wrong:
//
//   resources   files (every YAML document) and folders (rendered recursively), in order
//   patches     strategic merge patches (lists merged by their Kubernetes merge key in kustomize's
//               order, null deletes) and JSON 6902 patches (add, remove, replace); by `path` or inline
//               `patch`; the target is `target` (group, version, kind, name as an anchored
//               regular expression, namespace) or, for a strategic merge patch without one, the
//               patch's own apiVersion, kind and name. A patch that matches nothing is an error.
//   namespace   metadata.namespace of every namespaced object (a Namespace object is renamed)
//   labels      pairs, on metadata.labels and (includeTemplates) pod and claim templates;
//               includeSelectors must be false
//   images      name -> newName, newTag, digest on every container and initContainer
//
// applied in kustomize's order (patches, namespace, labels, images) after the resources. The
// test compares the result with `kubectl kustomize` where that exists, object by object.
//
// Usage:
//   node render.mjs DIR                     print the rendered objects as one JSON array
//   node render.mjs --compare DIR FILE      render DIR and compare with FILE (kustomize's YAML
//                                           output): the same objects, equal as JSON; exit 1 if not
//   node render.mjs --yaml-to-json FILE     print FILE's YAML documents as one JSON array
// js-yaml comes from $CELLSERVE_NODE_MODULES (the test installs it with npm).
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const nodeModules = process.env.CELLSERVE_NODE_MODULES;
if (!nodeModules) {
  console.error("render.mjs: set CELLSERVE_NODE_MODULES to the node_modules folder with js-yaml");
  process.exit(2);
}
const yaml = await import(pathToFileURL(path.join(nodeModules, "js-yaml", "dist", "js-yaml.mjs")).href);

export function loadYamlFile(file) {
  const docs = yaml.loadAll(fs.readFileSync(file, "utf8"), null, { filename: file });
  return docs.filter((d) => d !== null && d !== undefined);
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const clone = (v) => structuredClone(v);

class RenderError extends Error {}
const fail = (msg) => {
  throw new RenderError(msg);
};

// Kinds without a namespace (the ones a cellserve deployment could plausibly contain).
const CLUSTER_SCOPED = new Set([
  "Namespace", "Node", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding",
  "CustomResourceDefinition", "PriorityClass", "RuntimeClass", "IngressClass",
  "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "APIService", "CSIDriver",
]);

const id = (o) => `${o.apiVersion}/${o.kind}/${o.metadata?.namespace ?? "~"}/${o.metadata?.name}`;
const groupOf = (apiVersion) => (apiVersion.includes("/") ? apiVersion.split("/")[0] : "");
const versionOf = (apiVersion) => (apiVersion.includes("/") ? apiVersion.split("/")[1] : apiVersion);

// ---- strategic merge patch ----------------------------------------------------------------------

// The merge key of the Kubernetes lists that strategic merge patches merge (patchStrategy=merge in
// the API types) by field name; every other list is replaced whole.
function mergeKeyFor(field, items) {
  switch (field) {
    case "containers":
    case "initContainers":
    case "ephemeralContainers":
    case "volumes":
    case "env":
    case "imagePullSecrets":
    case "resourceClaims":
      return "name";
    case "volumeMounts":
      return "mountPath";
    case "volumeDevices":
      return "devicePath";
    case "hostAliases":
      return "ip";
    case "topologySpreadConstraints":
      return "topologyKey";
    case "ports": // container ports merge by containerPort, Service ports by port
      return items.some((p) => isObject(p) && "containerPort" in p) ? "containerPort" : "port";
    default:
      return null;
  }
}

function strategicMerge(base, patch, where) {
  if (!isObject(base) || !isObject(patch)) return clone(patch);
  const out = clone(base);
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith("$")) fail(`${where}: strategic merge directive ${key} is not supported`);
    if (value === null) {
      delete out[key];
    } else if (isObject(value) && isObject(out[key])) {
      out[key] = strategicMerge(out[key], value, `${where}.${key}`);
    } else if (Array.isArray(value) && Array.isArray(out[key]) && mergeKeyFor(key, [...out[key], ...value])) {
      // kustomize's order (kyaml): the patch's items first, in the patch's order (merged into the
      // base's item with the same key), then the base's other items in their order.
      const mk = mergeKeyFor(key, [...out[key], ...value]);
      const rest = [...out[key]];
      const merged = [];
      for (const item of value) {
        if (!isObject(item) || !(mk in item)) fail(`${where}.${key}: every item needs its merge key ${mk}`);
        // kyaml keys ports by (port, protocol) and then drops a patched protocol: not emulated.
        if (key === "ports" && "protocol" in item) fail(`${where}.${key}: a patched port with a protocol is not supported`);
        const i = rest.findIndex((b) => isObject(b) && b[mk] === item[mk]);
        if (i >= 0) merged.push(strategicMerge(rest.splice(i, 1)[0], item, `${where}.${key}[${mk}=${item[mk]}]`));
        else merged.push(clone(item));
      }
      out[key] = [...merged, ...rest];
    } else {
      out[key] = clone(value);
    }
  }
  return out;
}

// ---- JSON 6902 ----------------------------------------------------------------------------------

function pointer(p) {
  if (p === "") return [];
  if (!p.startsWith("/")) fail(`JSON patch path '${p}' must start with /`);
  return p.slice(1).split("/").map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function json6902(doc, ops, where) {
  const out = clone(doc);
  for (const op of ops) {
    const parts = pointer(op.path ?? fail(`${where}: an op without a path`));
    const last = parts.pop();
    let parent = out;
    for (const p of parts) {
      parent = Array.isArray(parent) ? parent[Number(p)] : parent?.[p];
      if (parent === undefined) fail(`${where}: ${op.path}: no such path`);
    }
    const index = Array.isArray(parent) ? (last === "-" ? parent.length : Number(last)) : null;
    switch (op.op) {
      case "add":
        if (Array.isArray(parent)) parent.splice(index, 0, clone(op.value));
        else parent[last] = clone(op.value);
        break;
      case "replace":
        if (Array.isArray(parent) ? index >= parent.length : !(last in parent)) fail(`${where}: replace ${op.path}: nothing there`);
        if (Array.isArray(parent)) parent[index] = clone(op.value);
        else parent[last] = clone(op.value);
        break;
      case "remove":
        if (Array.isArray(parent) ? index >= parent.length : !(last in parent)) fail(`${where}: remove ${op.path}: nothing there`);
        if (Array.isArray(parent)) parent.splice(index, 1);
        else delete parent[last];
        break;
      default:
        fail(`${where}: JSON patch op '${op.op}' is not supported (add, remove, replace)`);
    }
  }
  return out;
}

// ---- transformers -------------------------------------------------------------------------------

function matchesTarget(o, t, where) {
  for (const k of Object.keys(t)) {
    if (!["group", "version", "kind", "name", "namespace"].includes(k)) fail(`${where}: target.${k} is not supported`);
  }
  const anchored = (re, s) => new RegExp(`^(?:${re})$`).test(s ?? "");
  return (
    (t.group === undefined || groupOf(o.apiVersion) === t.group) &&
    (t.version === undefined || versionOf(o.apiVersion) === t.version) &&
    (t.kind === undefined || o.kind === t.kind) &&
    (t.name === undefined || anchored(t.name, o.metadata?.name)) &&
    (t.namespace === undefined || anchored(t.namespace, o.metadata?.namespace))
  );
}

function applyPatch(objects, entry, dir, where) {
  for (const k of Object.keys(entry)) {
    if (!["path", "patch", "target"].includes(k)) fail(`${where}: patches[].${k} is not supported`);
  }
  let docs;
  if (entry.path !== undefined) docs = loadYamlFile(path.resolve(dir, entry.path));
  else if (entry.patch !== undefined) docs = yaml.loadAll(entry.patch).filter((d) => d != null);
  else fail(`${where}: a patch needs path or patch`);
  if (docs.length !== 1) fail(`${where}: a patch must be one YAML document`);
  const patch = docs[0];
  const isJson6902 = Array.isArray(patch);
  if (isJson6902 && !entry.target) fail(`${where}: a JSON 6902 patch needs a target`);
  const target = entry.target ?? {
    group: groupOf(patch.apiVersion ?? fail(`${where}: the patch has no apiVersion`)),
    version: versionOf(patch.apiVersion),
    kind: patch.kind ?? fail(`${where}: the patch has no kind`),
    name: (patch.metadata?.name ?? fail(`${where}: the patch has no metadata.name`)).replace(/[.*+?^${}()|[\]\\]/g, "\\$&"),
    ...(patch.metadata?.namespace ? { namespace: patch.metadata.namespace } : {}),
  };
  let hits = 0;
  for (let i = 0; i < objects.length; i++) {
    if (!matchesTarget(objects[i], target, where)) continue;
    hits++;
    if (isJson6902) {
      objects[i] = json6902(objects[i], patch, where);
    } else {
      // The target's own identity stays; the patch's apiVersion/kind/name only select it.
      const body = clone(patch);
      delete body.apiVersion;
      delete body.kind;
      if (body.metadata) {
        delete body.metadata.name;
        delete body.metadata.namespace;
      }
      objects[i] = strategicMerge(objects[i], body, where);
    }
  }
  if (hits === 0) fail(`${where}: the patch matches no resource (target ${JSON.stringify(target)})`);
}

function setNamespace(objects, ns) {
  for (const o of objects) {
    // As kustomize does: a Namespace object takes the kustomization's namespace as its name.
    if (o.kind === "Namespace") o.metadata.name = ns;
    if (CLUSTER_SCOPED.has(o.kind)) continue;
    o.metadata.namespace = ns;
  }
}

// Pod templates: where includeTemplates puts labels and where images live.
function podTemplates(o) {
  const t = [];
  if (["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"].includes(o.kind) && o.spec?.template) {
    t.push(o.spec.template);
  }
  if (o.kind === "CronJob" && o.spec?.jobTemplate?.spec?.template) t.push(o.spec.jobTemplate.spec.template);
  return t;
}

function applyLabels(objects, entry, where) {
  for (const k of Object.keys(entry)) {
    if (!["pairs", "includeSelectors", "includeTemplates"].includes(k)) fail(`${where}: labels[].${k} is not supported`);
  }
  if (entry.includeSelectors) fail(`${where}: labels[].includeSelectors: true is not supported`);
  const pairs = entry.pairs ?? {};
  const add = (meta) => Object.assign((meta.labels ??= {}), pairs);
  for (const o of objects) {
    add((o.metadata ??= {}));
    if (!entry.includeTemplates) continue;
    for (const t of podTemplates(o)) add((t.metadata ??= {}));
    if (o.kind === "StatefulSet") for (const c of o.spec?.volumeClaimTemplates ?? []) add((c.metadata ??= {}));
  }
}

function splitImage(image) {
  let name = image;
  let digest = "";
  let tag = "";
  const at = name.indexOf("@");
  if (at >= 0) [name, digest] = [name.slice(0, at), name.slice(at + 1)];
  const colon = name.lastIndexOf(":");
  if (colon > name.lastIndexOf("/")) [name, tag] = [name.slice(0, colon), name.slice(colon + 1)];
  return { name, tag, digest };
}

function applyImage(objects, entry, where) {
  for (const k of Object.keys(entry)) {
    if (!["name", "newName", "newTag", "digest"].includes(k)) fail(`${where}: images[].${k} is not supported`);
  }
  const pods = [];
  for (const o of objects) {
    for (const t of podTemplates(o)) pods.push(t.spec ?? {});
    if (o.kind === "Pod") pods.push(o.spec ?? {});
  }
  for (const spec of pods) {
    for (const c of [...(spec.containers ?? []), ...(spec.initContainers ?? [])]) {
      if (typeof c.image !== "string") continue;
      const img = splitImage(c.image);
      if (img.name !== entry.name) continue;
      const name = entry.newName ?? img.name;
      if (entry.digest) c.image = `${name}@${entry.digest}`;
      else if (entry.newTag !== undefined) c.image = `${name}:${entry.newTag}`;
      else c.image = name + (img.tag ? `:${img.tag}` : "") + (img.digest ? `@${img.digest}` : "");
    }
  }
}

// ---- the kustomization --------------------------------------------------------------------------

const FIELDS = new Set(["apiVersion", "kind", "resources", "patches", "namespace", "labels", "images"]);

export function render(dir) {
  const names = ["kustomization.yaml", "kustomization.yml", "Kustomization"];
  const file = names.map((n) => path.join(dir, n)).find((f) => fs.existsSync(f));
  if (!file) fail(`${dir}: no kustomization.yaml`);
  const docs = loadYamlFile(file);
  if (docs.length !== 1 || !isObject(docs[0])) fail(`${file}: must be one YAML mapping`);
  const k = docs[0];
  for (const key of Object.keys(k)) {
    if (!FIELDS.has(key)) fail(`${file}: '${key}' is not supported by render.mjs (it knows: ${[...FIELDS].join(", ")})`);
  }
  if (k.kind !== undefined && k.kind !== "Kustomization") fail(`${file}: kind must be Kustomization`);

  const objects = [];
  for (const r of k.resources ?? []) {
    const p = path.resolve(dir, r);
    if (!fs.existsSync(p)) fail(`${file}: resource ${r} does not exist`);
    if (fs.statSync(p).isDirectory()) objects.push(...render(p));
    else {
      for (const o of loadYamlFile(p)) {
        if (!isObject(o) || !o.apiVersion || !o.kind || !o.metadata?.name) {
          fail(`${p}: every document needs apiVersion, kind and metadata.name`);
        }
        objects.push(o);
      }
    }
  }
  const seen = new Set();
  for (const o of objects) {
    if (seen.has(id(o))) fail(`${file}: ${id(o)} is defined twice`);
    seen.add(id(o));
  }
  (k.patches ?? []).forEach((p, i) => applyPatch(objects, p, dir, `${file}: patches[${i}]`));
  if (k.namespace) setNamespace(objects, k.namespace);
  (k.labels ?? []).forEach((l, i) => applyLabels(objects, l, `${file}: labels[${i}]`));
  (k.images ?? []).forEach((m, i) => applyImage(objects, m, `${file}: images[${i}]`));
  return objects;
}

// Canonical JSON (sorted keys), for comparing objects.
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (isObject(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
  return JSON.stringify(v);
}

function compare(mine, theirs) {
  const index = (list) => new Map(list.map((o) => [id(o), o]));
  const a = index(mine);
  const b = index(theirs);
  const problems = [];
  for (const [k, o] of a) {
    if (!b.has(k)) problems.push(`only in render.mjs: ${k}`);
    else if (canonical(o) !== canonical(b.get(k))) {
      problems.push(`differs: ${k}\n  render.mjs: ${canonical(o)}\n  kustomize:  ${canonical(b.get(k))}`);
    }
  }
  for (const k of b.keys()) if (!a.has(k)) problems.push(`only in kustomize: ${k}`);
  return problems;
}

const isMain = process.argv[1] && pathToFileURL(path.resolve(process.argv[1])).href === import.meta.url;
if (isMain) {
  const args = process.argv.slice(2);
  try {
    if (args[0] === "--compare" && args.length === 3) {
      const problems = compare(render(args[1]), loadYamlFile(args[2]));
      for (const p of problems) console.error(`render.mjs: ${p}`);
      if (problems.length) process.exit(1);
      console.log(`render.mjs: ${args[1]}: the same objects as kustomize`);
    } else if (args[0] === "--yaml-to-json" && args.length === 2) {
      console.log(JSON.stringify(loadYamlFile(args[1])));
    } else if (args.length === 1 && !args[0].startsWith("--")) {
      console.log(JSON.stringify(render(args[0]), null, 1));
    } else {
      console.error("usage: node render.mjs DIR | --compare DIR KUSTOMIZE_OUTPUT.yaml | --yaml-to-json FILE");
      process.exit(2);
    }
  } catch (e) {
    if (!(e instanceof RenderError) && !(e instanceof yaml.YAMLException)) throw e;
    console.error(`render.mjs: ${e.message}`);
    process.exit(1);
  }
}
