// Cilium Tetragon events shown readably: the event type and its probe (function, policy,
// action), the process under its parent as a small tree (binary and arguments, pid, uid,
// cwd), the pod, its image and the node, and a probe's named arguments (file and its
// permission, capability, socket), before the raw JSON.
//
// A record is recognised in either shape vigil holds it in: the fields the `tetragon`
// decoder makes (src/sources/tetragon/mod.rs: `event.type`, `process.*`, `parent.*`,
// `kprobe.*`, `arg.*` — the live stream's events), or the line as Tetragon wrote it, keyed
// by the event's type (`{"process_kprobe": {"process": …}, "node_name": …}` — an alert's
// samples). Anything else is not a Tetragon event: the callers render it as before.
//
// Every value here is attacker-controlled text (binaries, arguments, paths, pod names):
// it goes into the page as text nodes (ui.js `h`), never as HTML.

import { t } from './i18n.js';
import { h, jsonView } from './ui.js';

/** The event types the decoder knows (`KNOWN_TYPES` in src/sources/tetragon/mod.rs). */
const TYPES = [
  'process_exec',
  'process_exit',
  'process_kprobe',
  'process_tracepoint',
  'process_uprobe',
  'process_lsm',
  'process_loader',
  'process_throttle',
  'rate_limit_info',
  'process_connect',
  'process_close',
  'process_listen',
];

/** The probe events, and the field the decoder puts the probe under. */
const PROBES = {
  process_kprobe: 'kprobe',
  process_tracepoint: 'tracepoint',
  process_uprobe: 'uprobe',
  process_lsm: 'lsm',
};

/** Network events of Isovalent's builds: their socket's ends. */
const CONNECTIONS = ['process_connect', 'process_close', 'process_listen'];

const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const present = (v) => v !== undefined && v !== null && v !== '';

/**
 * The value at the dotted `path` of `o`, whether the record nests its objects
 * (`{"process": {"binary": …}}`) or names a field with the dots in it
 * (`{"process.binary": …}`), or mixes both.
 */
function get(o, path) {
  const parts = path.split('.');
  const walk = (v, i) => {
    if (i === parts.length) return v;
    if (!isObj(v)) return undefined;
    for (let j = parts.length; j > i; j--) {
      const key = parts.slice(i, j).join('.');
      if (Object.hasOwn(v, key)) {
        const found = walk(v[key], j);
        if (found !== undefined) return found;
      }
    }
    return undefined;
  };
  return walk(o, 0);
}

/** A kprobe's return value (`{"int_arg": 0}`) as its scalar. */
function scalarOf(v) {
  if (!isObj(v)) return v;
  const values = Object.values(v);
  return values.length ? values[0] : undefined;
}

/** Tetragon's `args` as the decoder names them (`file`, `cap`, `sock`, `int_2`, …). */
function flattenArgs(args) {
  const out = {};
  for (const a of args) {
    if (!isObj(a)) continue;
    const kind = Object.keys(a)[0];
    if (kind === undefined) continue;
    const name =
      { capability_arg: 'cap', process_credentials_arg: 'creds', sock_arg: 'sock', sockaddr_arg: 'sock' }[kind] ||
      kind.replace(/_arg$/, '');
    let key = name;
    for (let n = 2; Object.hasOwn(out, key); n++) key = `${name}_${n}`;
    out[key] = a[kind];
  }
  return out;
}

/** A line as Tetragon wrote it, in the decoder's fields; null when it is not one. */
function fromLine(r) {
  const kind = Object.keys(r).find((k) => TYPES.includes(k) && isObj(r[k]) && isObj(r[k].process));
  if (!kind) return null;
  const b = r[kind];
  const out = { event: { type: kind }, process: b.process, parent: b.parent, node_name: r.node_name };
  if (PROBES[kind]) {
    out[PROBES[kind]] = {
      function: b.function_name,
      policy: b.policy_name,
      action: b.action,
      subsys: b.subsys,
      event: b.event,
      symbol: b.symbol,
      path: b.path,
      return: scalarOf(b.return),
    };
    if (Array.isArray(b.args)) out.arg = flattenArgs(b.args);
  }
  if (CONNECTIONS.includes(kind)) {
    out.sock = {
      saddr: b.source_ip ?? b.ip,
      sport: b.source_port ?? b.port,
      daddr: b.destination_ip,
      dport: b.destination_port,
      protocol: b.protocol,
    };
  }
  if (kind === 'process_exit') {
    out.exit_signal = b.signal;
    out.exit_status = b.status;
  }
  return out;
}

/** `record` in the decoder's fields when it is a Tetragon event about a process; null
 * otherwise. */
function fields(record) {
  if (!isObj(record)) return null;
  const type = get(record, 'event.type');
  const r = typeof type === 'string' ? record : fromLine(record);
  if (!r) return null;
  const kind = get(r, 'event.type');
  if (!TYPES.includes(kind)) return null;
  const about = (side) => present(get(r, `${side}.binary`)) || present(get(r, `${side}.pid`));
  return about('process') || about('parent') ? r : null;
}

/** Whether `record` is a Tetragon event this module draws. */
export function isTetragon(record) {
  return fields(record) !== null;
}

/** `addr:port` (`[addr]:port` for IPv6), or the one that is there. */
function endpoint(addr, port) {
  if (!present(addr)) return null;
  const a = String(addr).includes(':') ? `[${addr}]` : String(addr);
  return present(port) ? `${a}:${port}` : a;
}

/** A label and its value, on one line with the others. */
function fact(name, label, ...value) {
  return h('span', { class: 'proc-fact', 'data-fact': name }, h('span', { class: 'proc-label' }, label), ' ', ...value);
}

/** `/usr/bin/curl -s http://…`: the binary, bold, and its arguments. */
function command(r, side) {
  const binary = get(r, `${side}.binary`);
  const args = get(r, `${side}.arguments`);
  return h(
    'code',
    { class: 'proc-cmd' },
    h('span', { class: 'proc-bin' }, present(binary) ? String(binary) : '?'),
    present(args) ? [' ', h('span', { class: 'proc-args' }, String(args))] : null,
  );
}

/** One process of the tree: its role, its command, then pid (uid and cwd for the process). */
function line(r, side) {
  const meta = [['pid', t('proc.pid')]];
  if (side === 'process') meta.push(['uid', t('proc.uid')], ['cwd', t('proc.cwd')]);
  const facts = meta
    .filter(([k]) => present(get(r, `${side}.${k}`)))
    .map(([k, label]) => fact(k, label, h('code', {}, String(get(r, `${side}.${k}`)))));
  return h(
    'div',
    { class: 'proc-line' },
    h('span', { class: 'proc-role' }, side === 'process' ? t('proc.process') : t('proc.parent')),
    command(r, side),
    facts.length ? h('span', { class: 'proc-meta' }, facts) : null,
  );
}

/** The parent above, the process under it. */
function tree(r) {
  const self = h('li', { class: 'proc-self' }, line(r, 'process'));
  const hasParent = present(get(r, 'parent.binary')) || present(get(r, 'parent.pid'));
  if (!hasParent) return h('ul', { class: 'proc-tree' }, self);
  return h('ul', { class: 'proc-tree' }, h('li', { class: 'proc-parent' }, line(r, 'parent'), h('ul', {}, self)));
}

/** The event type, and a probe's function, policy, action and return value. */
function head(r) {
  const kind = get(r, 'event.type');
  const key = PROBES[kind];
  const p = (f) => (key ? get(r, `${key}.${f}`) : undefined);
  const fn = p('function') ?? ([p('subsys'), p('event')].filter(present).join(':') || p('symbol'));
  const ret = p('return');
  return h(
    'div',
    { class: 'proc-head' },
    h('span', { class: 'badge proc-type' }, kind),
    present(fn) ? h('code', { class: 'proc-fn' }, String(fn)) : null,
    present(p('policy')) ? fact('policy', t('proc.policy'), h('code', {}, String(p('policy')))) : null,
    present(p('action')) ? h('span', { class: 'chip proc-action' }, String(p('action'))) : null,
    present(ret) && !isObj(ret) ? fact('return', t('proc.returned'), h('code', {}, String(ret))) : null,
  );
}

/** Where it ran: the pod (namespace/name), its image, the node. */
function place(r) {
  const ns = get(r, 'process.pod.namespace');
  const name = get(r, 'process.pod.name');
  const pod = [ns, name].filter(present).join('/');
  const image = get(r, 'process.pod.container.image');
  const imageName = isObj(image) ? image.name : image;
  const node = get(r, 'node_name');
  const out = [
    pod ? fact('pod', t('proc.pod'), h('code', {}, pod)) : null,
    present(imageName) ? fact('image', t('proc.image'), h('code', {}, String(imageName))) : null,
    present(node) ? fact('node', t('proc.node'), h('code', {}, String(node))) : null,
  ].filter(Boolean);
  return out.length ? h('div', { class: 'proc-facts proc-place' }, out) : null;
}

/** A short text of an argument's scalar value. */
function short(v, max = 80) {
  const s = String(v);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** A probe's arguments by name: files and their permission, capabilities, sockets,
 * kernel modules, then the other scalars; an exit's status and signal; a connection. */
function details(r) {
  const out = [];
  const code = (v) => h('code', {}, short(v, 200));
  const arg = get(r, 'arg');
  if (isObj(arg)) {
    const others = [];
    for (const [key, v] of Object.entries(arg)) {
      const kind = key.replace(/_\d+$/, '');
      if (['file', 'path', 'linux_binprm'].includes(kind) && isObj(v)) {
        if (present(v.path)) out.push(fact('file', t('proc.file'), code(v.path)));
        if (present(v.permission)) out.push(fact('permission', t('proc.permission'), code(v.permission)));
      } else if (kind === 'cap' && isObj(v) && present(v.name ?? v.value)) {
        out.push(fact('capability', t('proc.capability'), code(v.name ?? v.value)));
      } else if (kind === 'sock' && isObj(v) && present(v.daddr ?? v.saddr)) {
        const end = present(v.daddr) ? endpoint(v.daddr, v.dport) : endpoint(v.saddr, v.sport);
        out.push(fact('socket', t('proc.socket'), code(end), present(v.protocol) ? ` ${v.protocol}` : null));
      } else if (kind === 'module' && isObj(v) && present(v.name)) {
        out.push(fact('module', t('proc.module'), code(v.name)));
      } else if (present(v) && !isObj(v) && !Array.isArray(v)) {
        others.push(h('code', { class: 'chip' }, `${key}=${short(v, 60)}`));
      }
    }
    if (others.length) out.push(fact('args', t('proc.args'), others));
  }
  const sock = get(r, 'sock');
  if (isObj(sock)) {
    const ends = [endpoint(sock.saddr, sock.sport), endpoint(sock.daddr, sock.dport)].filter(Boolean);
    if (ends.length) out.push(fact('connection', t('proc.connection'), code(ends.join(' → ')), present(sock.protocol) ? ` ${sock.protocol}` : null));
  }
  const status = get(r, 'exit_status');
  const signal = get(r, 'exit_signal');
  if (present(status)) out.push(fact('exit-status', t('proc.exit_status'), code(status)));
  if (present(signal)) out.push(fact('signal', t('proc.signal'), code(signal)));
  return out.length ? h('div', { class: 'proc-facts proc-args-list' }, out) : null;
}

/**
 * The readable view of a Tetragon event, null for any other record: the type and probe,
 * the process tree, where it ran, the named arguments; then `raw` (by default `record`)
 * as JSON in a closed <details>.
 */
export function processView(record, raw = record) {
  const r = fields(record);
  if (!r) return null;
  return h(
    'div',
    { class: 'proc', 'data-event-type': get(r, 'event.type'), role: 'group', 'aria-label': t('proc.label') },
    head(r),
    tree(r),
    place(r),
    details(r),
    h('details', { class: 'proc-raw' }, h('summary', {}, t('proc.raw')), jsonView(raw)),
  );
}
