// The raftkv dashboard: watch a cluster elect, replicate and fail over.
//
// Two sources feed one view:
//  - live: every POLL_MS the page asks the node that served it for
//    GET /v1/dashboard (that node fetches every member's
//    /v1/dashboard/node), and derives what no single answer holds:
//    message rates between nodes (differences of the `messages_sent`
//    counters between two polls), and each election with its likely
//    cause (what the page saw happen to the old leader before a new one
//    won);
//  - a simulator trace (`raft-sim replay --seed S --json FILE`), loaded
//    from a file and stepped through event by event.
//
// Plain JavaScript, no library, no build step: the server embeds this
// file as it is. window.__dashboard exposes the state for the browser
// test (crates/raftkv/tests/dashboard_browser.rs).
'use strict';

(() => {
  const POLL_MS = 500;
  const ELECTIONS_MAX = 30;
  const EVENTS_MAX = 200;
  // A kill or isolation from this page explains an election that follows
  // within this long.
  const ACTION_MEMORY_MS = 20000;

  const $ = (sel) => document.querySelector(sel);
  const SVG_NS = 'http://www.w3.org/2000/svg';

  /** el('div', {class: 'x', text: 'hi', 'data-id': 3}, child...) */
  function el(tag, attrs, ...children) {
    const e = tag.startsWith('svg:')
      ? document.createElementNS(SVG_NS, tag.slice(4))
      : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c !== null && c !== undefined) e.append(c);
    }
    return e;
  }

  const fmt = (v) => (v === null || v === undefined ? '—' : String(v));
  const clockTime = (ms) => new Date(ms).toLocaleTimeString();
  const simTime = (us) => `${(us / 1000).toFixed(3)} ms`;

  const dash = {
    mode: 'live',
    polls: 0,
    pollErrors: 0,
    lastError: null,
    view: null,
    leader: null,
    elections: [],
    events: [],
    trace: null,
    loadTraceText,
  };
  window.__dashboard = dash;

  // ------------------------------------------------------------------
  // Rendering (shared by both sources)
  // ------------------------------------------------------------------
  //
  // A view: {
  //   nodes: [{id, up, role, term, leader, vote, commit, applied, last,
  //            persisted, snapshot, peers: [{id, match_index, next_index,
  //            state}], isolated, paused, timer: {elapsed, timeout} | null,
  //            error, here, started, won, transfer, note}],
  //   rates: Map 'a>b' -> messages/s | null (unknown),
  //   cut: Set 'a>b' (links that carry nothing: isolation, partition),
  //   dropped: Set 'a>b' (a message was just dropped there),
  //   controls, launcher, summary, ratesNote,
  // }

  const diagram = { key: '', nodes: new Map(), links: new Map() };
  const cards = new Map();

  function render(view) {
    dash.view = view;
    const leaders = view.nodes.filter((n) => n.up && n.role === 'leader');
    const top = leaders.sort((a, b) => b.term - a.term)[0];
    dash.leader = top ? top.id : null;
    document.body.dataset.leader = top ? String(top.id) : '';
    $('#summary').textContent = view.summary;
    renderDiagram(view);
    renderNodes(view);
    $('#rates-note').textContent = view.ratesNote || '';
  }

  function layout(ids) {
    const pos = new Map();
    const n = ids.length;
    const r = n <= 1 ? 0 : 125;
    ids.forEach((id, i) => {
      const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(n, 1);
      pos.set(id, { x: 210 + r * Math.cos(a), y: 190 + r * Math.sin(a) });
    });
    return pos;
  }

  function renderDiagram(view) {
    const svg = $('#diagram');
    const ids = view.nodes.map((n) => n.id);
    const key = ids.join(',');
    if (key !== diagram.key) {
      // The set of nodes changed: lay the picture out again.
      diagram.key = key;
      diagram.nodes.clear();
      diagram.links.clear();
      svg.replaceChildren();
      const pos = layout(ids);
      const links = el('svg:g');
      const nodes = el('svg:g');
      svg.append(links, nodes);
      for (const a of ids) {
        for (const b of ids) {
          if (a === b) continue;
          const p = pos.get(a);
          const q = pos.get(b);
          const len = Math.hypot(q.x - p.x, q.y - p.y) || 1;
          // Two lines per pair, one each way, 5 px apart.
          const ox = (-(q.y - p.y) / len) * 5;
          const oy = ((q.x - p.x) / len) * 5;
          const x1 = p.x + ((q.x - p.x) / len) * 34 + ox;
          const y1 = p.y + ((q.y - p.y) / len) * 34 + oy;
          const x2 = q.x - ((q.x - p.x) / len) * 34 + ox;
          const y2 = q.y - ((q.y - p.y) / len) * 34 + oy;
          const line = el('svg:line', { class: 'link', x1, y1, x2, y2, 'data-link': `${a}>${b}` });
          const label = el('svg:text', {
            class: 'rate',
            x: x1 + (x2 - x1) * 0.3 + ox * 2,
            y: y1 + (y2 - y1) * 0.3 + oy * 2,
          });
          links.append(line, label);
          diagram.links.set(`${a}>${b}`, { line, label });
        }
      }
      for (const id of ids) {
        const p = pos.get(id);
        const circumference = 2 * Math.PI * 38;
        const timer = el('svg:circle', {
          class: 'timer-ring', cx: p.x, cy: p.y, r: 38,
          transform: `rotate(-90 ${p.x} ${p.y})`,
          'stroke-dasharray': `0 ${circumference}`,
        });
        const ring = el('svg:circle', { class: 'ring', cx: p.x, cy: p.y, r: 34 });
        const circle = el('svg:circle', { class: 'node-circle role-unknown', cx: p.x, cy: p.y, r: 28, 'data-node': id });
        const label = el('svg:text', { class: 'node-label', x: p.x, y: p.y, text: String(id) });
        // Below the circle, or above it for nodes in the upper part, where
        // the links leave downwards.
        const sub = el('svg:text', { class: 'node-sub', x: p.x, y: p.y < 150 ? p.y - 44 : p.y + 52 });
        const title = el('svg:title');
        circle.append(title);
        nodes.append(timer, ring, circle, label, sub);
        diagram.nodes.set(id, { circle, label, sub, ring, timer, title, circumference });
      }
    }
    for (const n of view.nodes) {
      const d = diagram.nodes.get(n.id);
      const role = n.up ? n.role : 'down';
      d.circle.setAttribute('class', `node-circle role-${role}`);
      d.ring.setAttribute('visibility', n.isolated ? 'visible' : 'hidden');
      d.sub.textContent = n.up
        ? `${role}${n.term !== null && n.term !== undefined ? ` · t${n.term}` : ''}${n.paused ? ' · paused' : ''}`
        : 'down';
      d.title.textContent = `node ${n.id}: ${n.up ? role : 'down'}`;
      const t = n.up && n.role !== 'leader' ? n.timer : null;
      const share = t && t.timeout > 0 ? Math.min(1, t.elapsed / t.timeout) : 0;
      d.timer.setAttribute('stroke-dasharray', `${share * d.circumference} ${d.circumference}`);
    }
    for (const [key, d] of diagram.links) {
      const rate = view.rates ? view.rates.get(key) : undefined;
      const classes = ['link'];
      if (view.cut && view.cut.has(key)) classes.push('cut');
      if (view.dropped && view.dropped.has(key)) classes.push('dropped');
      if (rate && rate > 0.05) {
        classes.push('active');
        // Faster dashes for more messages: 0.25 s at 1000/s, 3 s at 1/s.
        const secs = Math.max(0.25, Math.min(3, 3 / (1 + Math.log10(Math.max(rate, 1)) * 3.7)));
        d.line.style.animationDuration = `${secs.toFixed(2)}s`;
        d.line.setAttribute('stroke-width', String(Math.min(5, 1 + Math.log10(1 + rate))));
      } else {
        d.line.setAttribute('stroke-width', '1');
      }
      d.line.setAttribute('class', classes.join(' '));
      d.label.textContent = rate === null || rate === undefined ? '' : `${rate < 10 ? rate.toFixed(1) : Math.round(rate)}/s`;
    }
  }

  function cardFor(id) {
    let c = cards.get(id);
    if (c) return c;
    const fields = {};
    const row = (name, key) => {
      const td = el('td');
      fields[key] = td;
      return el('tr', {}, el('td', { text: name }), td);
    };
    const badge = el('span', { class: 'badge role-unknown' });
    const isolated = el('span', { class: 'badge isolated', text: 'isolated', hidden: true });
    const here = el('span', { class: 'here', text: '(this page)', hidden: true });
    const table = el('table', {},
      row('term', 'term'), row('leader', 'leader'), row('voted for', 'vote'),
      row('commit / applied', 'applied'), row('last / persisted', 'last'),
      row('snapshot', 'snapshot'), row('elections started / won', 'elections'));
    const timerRow = el('div', { class: 'timer', hidden: true });
    const timerText = el('div', { class: 'note' });
    const timerBar = el('span');
    timerRow.append(timerText, el('div', { class: 'bar' }, timerBar));
    const error = el('div', { class: 'error', hidden: true });
    const progress = el('div', { class: 'progress', hidden: true });
    const controls = el('div', { class: 'controls', hidden: true });
    const button = (action, text, title) => {
      const b = el('button', { type: 'button', 'data-action': action, 'data-node': id, text, title });
      controls.append(b);
      return b;
    };
    const buttons = {
      kill: button('kill', 'Kill', 'SIGKILL the process (the launcher restarts it only when asked)'),
      restart: button('restart', 'Restart', 'Start the killed process again'),
      isolate: button('isolate', 'Isolate', 'Drop every Raft message to and from this node'),
      heal: button('heal', 'Heal', 'Reconnect the node to its peers'),
      transfer: button('transfer', 'Make leader', 'Ask the leader to hand leadership over to this node'),
    };
    const card = el('article', { class: 'node', 'data-id': id },
      el('div', { class: 'node-head' }, el('span', { class: 'name', text: `Node ${id}` }), badge, isolated, here),
      error, table, timerRow, progress, controls);
    c = { card, fields, badge, isolated, here, error, progress, controls, buttons, timerRow, timerText, timerBar };
    cards.set(id, c);
    return c;
  }

  function renderNodes(view) {
    const box = $('#nodes');
    const ids = new Set(view.nodes.map((n) => n.id));
    for (const [id, c] of cards) {
      if (!ids.has(id)) {
        c.card.remove();
        cards.delete(id);
      }
    }
    const anyLeader = view.nodes.some((n) => n.up && n.role === 'leader');
    for (const n of view.nodes) {
      const c = cardFor(n.id);
      if (c.card.parentNode !== box) box.append(c.card);
      const role = n.up ? n.role : 'down';
      c.card.dataset.up = String(n.up);
      c.card.dataset.role = role;
      c.card.dataset.isolated = String(!!n.isolated);
      c.badge.className = `badge role-${role}`;
      c.badge.textContent = n.up ? role + (n.paused ? ' (paused)' : '') : 'down';
      c.isolated.hidden = !n.isolated;
      c.here.hidden = !n.here;
      c.error.hidden = !n.error;
      c.error.textContent = n.error || '';
      const f = c.fields;
      f.term.textContent = fmt(n.term);
      f.leader.textContent = n.leader ? `node ${n.leader}` : (n.up ? 'none known' : '—');
      f.vote.textContent = n.vote ? `node ${n.vote}` : '—';
      f.applied.textContent = `${fmt(n.commit)} / ${fmt(n.applied)}`;
      f.last.textContent = `${fmt(n.last)} / ${fmt(n.persisted)}`;
      f.snapshot.textContent = fmt(n.snapshot);
      f.elections.textContent = `${fmt(n.started)} / ${fmt(n.won)}`;
      // The election timer: how far a follower is from campaigning.
      const t = n.up && n.role !== 'leader' ? n.timer : null;
      c.timerRow.hidden = !t;
      if (t) {
        c.timerText.textContent = `election timer: ${t.elapsed} of ${t.timeout} ticks`;
        c.timerBar.style.width = `${Math.min(100, (100 * t.elapsed) / Math.max(1, t.timeout))}%`;
      }
      // A leader's view of each follower.
      const peers = n.up && n.role === 'leader' ? (n.peers || []) : [];
      c.progress.hidden = peers.length === 0;
      if (peers.length) {
        const rows = peers.map((p) => el('tr', {},
          el('td', { text: `node ${p.id}` }),
          el('td', { text: String(p.match_index) }),
          el('td', { text: String(Math.max(0, (n.last || 0) - p.match_index)) }),
          el('td', { text: p.state })));
        c.progress.replaceChildren(el('table', {},
          el('tr', {}, el('th', { text: 'follower' }), el('th', { text: 'match' }), el('th', { text: 'behind' }), el('th', { text: 'state' })),
          ...rows));
      }
      // Buttons: live mode with --dashboard-controls only.
      c.controls.hidden = !view.controls;
      if (view.controls) {
        const b = c.buttons;
        b.kill.hidden = !view.launcher;
        b.restart.hidden = !view.launcher;
        b.kill.disabled = !n.up;
        b.restart.disabled = n.up || !n.restartable;
        b.isolate.hidden = !!n.isolated;
        b.heal.hidden = !n.isolated;
        b.isolate.disabled = !n.up;
        b.heal.disabled = !n.up;
        b.transfer.disabled = !n.up || n.role === 'leader' || !anyLeader || n.role === 'learner';
      }
    }
  }

  function renderElections(list, timeOf) {
    const ol = $('#elections');
    ol.replaceChildren(...list.slice().reverse().map((e) => el('li', {
      'data-term': e.term, 'data-winner': e.winner, 'data-cause': e.causeKind,
    },
    el('span', { class: 'time', text: timeOf(e) }),
    `term ${e.term}: node ${e.winner} won`,
    el('span', { class: 'cause', text: ` — ${e.cause}` }))));
  }

  function renderEvents(list, timeOf, current) {
    const ol = $('#events');
    ol.replaceChildren(...list.map((e) => el('li', {
      class: `kind-${e.kind}${current !== undefined && e.index === current ? ' current' : ''}`,
    }, el('span', { class: 'time', text: timeOf(e) }), e.text)));
    // Keep the current event in view by scrolling the list only (not the
    // page, which scrollIntoView would also move).
    const cur = ol.querySelector('.current');
    if (cur) ol.scrollTop = Math.max(0, cur.offsetTop - ol.offsetTop - ol.clientHeight / 2);
  }

  let toastTimer = null;
  function toast(text, bad) {
    let t = $('.toast');
    if (!t) {
      t = el('div', { class: 'toast' });
      document.body.append(t);
    }
    t.textContent = text;
    t.classList.toggle('bad', !!bad);
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
  }

  // ------------------------------------------------------------------
  // Live cluster
  // ------------------------------------------------------------------

  const live = {
    timer: null,
    prev: new Map(), // id -> {at, sent: {peer: n}, started, up, isolated, role}
    rates: new Map(),
    known: null, // {id, term}: the last leader seen
    lost: null, // {at, why, started: Map id -> elections_started}
    actions: new Map(), // id -> {action, at}
    transfer: null, // {to, at}: asked from this page
    lastTransferTarget: null, // {from, to}: seen on a leader's status
    servedBy: null,
    lastData: null,
  };

  function liveEvent(kind, text) {
    dash.events.push({ kind, text, at: Date.now() });
    if (dash.events.length > EVENTS_MAX) dash.events.shift();
  }

  function nodeFromMember(m, servedBy, launcher) {
    const base = { id: m.id, here: m.id === servedBy, restartable: launcher };
    if (!m.node) {
      return { ...base, up: false, role: 'down', error: m.error || 'no answer', term: null };
    }
    const s = m.node.status;
    let role = s.role;
    if (role === 'follower' && s.members.learners.includes(m.id)) role = 'learner';
    const timer = typeof s.election_elapsed_ticks === 'number'
      ? { elapsed: s.election_elapsed_ticks, timeout: s.election_timeout_ticks }
      : null;
    return {
      ...base,
      up: true,
      role,
      term: s.term,
      leader: s.leader,
      vote: s.vote,
      commit: s.commit_index,
      applied: s.applied_index,
      last: s.last_index,
      persisted: s.persisted_index,
      snapshot: s.snapshot_index,
      peers: s.peers,
      transfer: s.transfer_target,
      isolated: m.node.isolated,
      timer,
      started: m.node.counters.elections_started,
      won: m.node.counters.elections_won,
      counters: m.node.counters,
    };
  }

  function updateRates(nodes, at) {
    for (const n of nodes) {
      const prev = live.prev.get(n.id);
      if (!n.up) {
        // A dead node sends nothing; what others send it shows on theirs.
        for (const o of nodes) if (o.id !== n.id) live.rates.set(`${n.id}>${o.id}`, 0);
        continue;
      }
      const sent = n.counters.messages_sent;
      for (const [peer, count] of Object.entries(sent)) {
        const key = `${n.id}>${peer}`;
        const before = prev && prev.sent ? prev.sent[peer] : undefined;
        const dt = prev ? (at - prev.at) / 1000 : 0;
        if (before === undefined || count < before || dt <= 0) {
          // First sight, or the process restarted (counters from zero).
          if (!live.rates.has(key)) live.rates.set(key, null);
          continue;
        }
        const r = (count - before) / dt;
        const old = live.rates.get(key);
        // A little smoothing: polls are not evenly spaced.
        live.rates.set(key, old === null || old === undefined ? r : 0.5 * old + 0.5 * r);
      }
    }
  }

  function recentAction(id, action) {
    const a = live.actions.get(id);
    return a && a.action === action && Date.now() - a.at < ACTION_MEMORY_MS;
  }

  /** Why the leader `known` lost its leadership, from what the page saw. */
  function whyLost(known, nodes, at) {
    const old = nodes.find((n) => n.id === known.id);
    if (!old || !old.up) {
      return recentAction(known.id, 'kill')
        ? { kind: 'killed', text: `leader node ${known.id} was killed from this page` }
        : { kind: 'unreachable', text: `leader node ${known.id} stopped answering (${old ? old.error : 'gone'})` };
    }
    if (old.isolated || recentAction(known.id, 'isolate')) {
      return { kind: 'isolated', text: `leader node ${known.id} was isolated from its peers` };
    }
    if (live.transfer && at - live.transfer.at < ACTION_MEMORY_MS) {
      return { kind: 'transfer', text: `node ${known.id} handed leadership over (asked from this page)` };
    }
    if (live.lastTransferTarget && live.lastTransferTarget.from === known.id) {
      return { kind: 'transfer', text: `node ${known.id} handed leadership over` };
    }
    return {
      kind: 'lapsed',
      text: `node ${known.id} lost its leadership while it still answered (its heartbeats did not reach a majority in time, or it saw a higher term)`,
    };
  }

  /** Notes changes between two polls; infers elections and their causes. */
  function observe(nodes, at) {
    for (const n of nodes) {
      const p = live.prev.get(n.id);
      if (!p) continue;
      if (p.up && !n.up) liveEvent('down', `node ${n.id} stopped answering (${n.error})`);
      if (!p.up && n.up) liveEvent('up', `node ${n.id} answers again (term ${n.term}, ${n.role})`);
      if (n.up && p.up && p.isolated !== n.isolated) {
        liveEvent('isolate', n.isolated ? `node ${n.id} is isolated from its peers` : `node ${n.id} is reconnected to its peers`);
      }
      if (n.up && p.up && p.role !== n.role) liveEvent('role', `node ${n.id}: ${p.role} → ${n.role} (term ${n.term})`);
    }
    const leaders = nodes.filter((n) => n.up && n.role === 'leader').sort((a, b) => b.term - a.term);
    const leader = leaders[0] || null;
    if (leader && leader.transfer) live.lastTransferTarget = { from: leader.id, to: leader.transfer, at };
    const known = live.known;
    const stillLeads = known && nodes.some((n) => n.id === known.id && n.up && n.role === 'leader' && n.term === known.term);
    // Losing the leader: remember why, and each node's campaign count.
    if (known && !stillLeads && !live.lost) {
      const why = whyLost(known, nodes, at);
      live.lost = { at, why, started: new Map(nodes.map((n) => [n.id, n.started])) };
      liveEvent('leader', `no leader: ${why.text}`);
    }
    if (leader && (!known || leader.term > known.term || leader.id !== known.id)) {
      let cause;
      let causeKind;
      if (!known) {
        cause = 'already leading when this page opened';
        causeKind = 'initial';
      } else if (live.transfer && live.transfer.to === leader.id && at - live.transfer.at < ACTION_MEMORY_MS) {
        cause = `leadership transfer from node ${known.id}, asked from this page`;
        causeKind = 'transfer';
      } else if (live.lastTransferTarget && live.lastTransferTarget.to === leader.id && live.lastTransferTarget.from === known.id) {
        cause = `leadership transfer from node ${known.id}`;
        causeKind = 'transfer';
      } else {
        // Usually noted when the old leader stepped down; if it still
        // claims its older term (an isolated leader that has not noticed
        // yet), judge now.
        const why = live.lost ? live.lost.why : whyLost(known, nodes, at);
        cause = why.text;
        causeKind = why.kind;
      }
      const extra = [];
      if (live.lost) {
        const campaigns = nodes
          .filter((n) => n.up && live.lost.started.has(n.id) && typeof n.started === 'number')
          .map((n) => [n.id, n.started - (live.lost.started.get(n.id) || 0)])
          .filter(([, d]) => d > 0)
          .map(([id, d]) => `node ${id} ×${d}`);
        if (campaigns.length) extra.push(`campaigns (pre-votes included): ${campaigns.join(', ')}`);
        extra.push(`no leader for ~${((at - live.lost.at) / 1000).toFixed(1)} s`);
      }
      const e = { term: leader.term, winner: leader.id, at, cause: cause + (extra.length ? `; ${extra.join('; ')}` : ''), causeKind };
      dash.elections.push(e);
      if (dash.elections.length > ELECTIONS_MAX) dash.elections.shift();
      liveEvent('leader', `node ${leader.id} leads term ${leader.term}`);
      live.known = { id: leader.id, term: leader.term };
      live.lost = null;
      if (causeKind === 'transfer') live.transfer = null;
    }
  }

  async function poll() {
    live.timer = null;
    if (dash.mode !== 'live') return;
    let data;
    try {
      const r = await fetch('/v1/dashboard', { cache: 'no-store' });
      const body = await r.json();
      if (!r.ok) throw new Error(body && body.error ? body.error.message : `HTTP ${r.status}`);
      data = body;
    } catch (e) {
      dash.pollErrors += 1;
      dash.lastError = String(e);
      showServerDown(String(e));
      schedulePoll();
      return;
    }
    if (dash.mode !== 'live') return;
    dash.polls += 1;
    $('#banner').hidden = true;
    live.lastData = data;
    live.servedBy = data.served_by;
    const at = Date.now();
    const nodes = data.nodes.map((m) => nodeFromMember(m, data.served_by, data.launcher));
    updateRates(nodes, at);
    observe(nodes, at);
    for (const n of nodes) {
      live.prev.set(n.id, {
        at, sent: n.up ? n.counters.messages_sent : null, up: n.up,
        isolated: !!n.isolated, role: n.role, started: n.started,
      });
    }
    $('#mode').textContent = `Live: served by node ${data.served_by}`;
    const leader = nodes.filter((n) => n.up && n.role === 'leader').sort((a, b) => b.term - a.term)[0];
    const commit = Math.max(0, ...nodes.filter((n) => n.up).map((n) => n.commit || 0));
    const summary = leader
      ? `leader: node ${leader.id} · term ${leader.term} · commit ${commit}`
      : `no leader · commit ${commit}`;
    const cut = new Set();
    for (const n of nodes) {
      if (n.isolated) {
        for (const o of nodes) {
          if (o.id !== n.id) { cut.add(`${n.id}>${o.id}`); cut.add(`${o.id}>${n.id}`); }
        }
      }
    }
    const anyTimer = nodes.some((n) => n.timer);
    render({
      nodes, rates: live.rates, cut, dropped: null, controls: data.controls, launcher: data.launcher, summary,
      ratesNote: 'Arrows: Raft messages per second each way (from each node\'s messages_sent counters).'
        + (anyTimer ? ' Orange ring: a follower\'s election timer.' : ''),
    });
    renderElections(dash.elections, (e) => clockTime(e.at));
    renderEvents(dash.events.slice(-60).reverse(), (e) => clockTime(e.at));
    $('#footer-note').textContent = data.controls
      ? `Controls on (${data.launcher ? 'kill and restart through the launcher' : 'no launcher: kill and restart are off'}). Polling /v1/dashboard every ${POLL_MS} ms.`
      : `Read-only (start nodes with --dashboard-controls, as raftkv cluster does, for the buttons). Polling /v1/dashboard every ${POLL_MS} ms.`;
    schedulePoll();
  }

  function schedulePoll() {
    if (dash.mode === 'live' && live.timer === null) live.timer = setTimeout(poll, POLL_MS);
  }

  function showServerDown(why) {
    const b = $('#banner');
    b.replaceChildren(`Node ${live.servedBy || ''}, which served this page, does not answer (${why}). `);
    const others = live.lastData ? live.lastData.nodes.filter((m) => m.id !== live.servedBy && m.client_addr) : [];
    if (others.length) {
      b.append('Open another node\'s dashboard: ');
      others.forEach((m, i) => {
        if (i) b.append(', ');
        b.append(el('a', { href: `http://${m.client_addr}/`, text: `node ${m.id}` }));
      });
      b.append(' (its address as the cluster knows it).');
    }
    b.hidden = false;
  }

  async function act(id, action) {
    const post = (path, body) => fetch(path, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    live.actions.set(id, { action, at: Date.now() });
    if (action === 'transfer') live.transfer = { to: id, at: Date.now() };
    liveEvent('action', `asked: ${action === 'transfer' ? 'make node ' + id + ' the leader' : action + ' node ' + id}`);
    try {
      const r = action === 'transfer'
        ? await post('/v1/leader/transfer', { to: id })
        : await post('/v1/dev/control', { node: id, action });
      const text = await r.text();
      let msg = text;
      try {
        const j = JSON.parse(text);
        msg = j.error ? j.error.message : (j.message || JSON.stringify(j));
      } catch (_) { /* not JSON: show as is */ }
      toast(`${action} node ${id}: ${r.ok ? 'done' : 'refused'} — ${msg}`, !r.ok);
      liveEvent('action', `${action} node ${id}: ${r.ok ? 'done' : 'refused: ' + msg}`);
    } catch (e) {
      toast(`${action} node ${id}: ${e}`, true);
      liveEvent('action', `${action} node ${id}: failed: ${e}`);
    }
    if (live.timer !== null) {
      clearTimeout(live.timer);
      live.timer = null;
    }
    poll();
  }

  $('#nodes').addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-action]');
    if (!b || b.disabled || dash.mode !== 'live') return;
    act(Number(b.dataset.node), b.dataset.action);
  });

  // ------------------------------------------------------------------
  // Simulator traces
  // ------------------------------------------------------------------
  //
  // The trace is the timeline of `raft-sim replay --json`: events
  // {time_us, what: {type, ...}} for role changes, leader commits,
  // crashes and restarts, pauses, partitions, drops, transfers, client
  // operations... It has no sent messages, no follower indexes and no
  // election timers, so those parts of the view stay empty in trace mode.

  const CHECKPOINT_EVERY = 256;
  const IMPORTANT = new Set(['start', 'phase', 'role', 'crash', 'restart', 'pause', 'resume', 'partition', 'heal',
    'storage_failed', 'membership', 'transfer', 'violation', 'clock_jump', 'install_snapshot', 'compact', 'disk_fault', 'slow_link', 'commit']);

  function traceNodes(events) {
    const ids = new Set();
    for (const e of events) {
      const w = e.what;
      for (const k of ['node', 'from', 'to']) if (typeof w[k] === 'number') ids.add(w[k]);
      if (w.type === 'role' && typeof w.leader === 'number') ids.add(w.leader);
      if (w.type === 'partition') for (const [a, b] of w.cut) { ids.add(a); ids.add(b); }
    }
    return [...ids].sort((a, b) => a - b);
  }

  function initialTraceState(ids) {
    const nodes = {};
    for (const id of ids) {
      nodes[id] = { id, up: true, role: 'follower', term: 0, leader: null, commit: null, snapshot: null, paused: false, note: null };
    }
    return { index: -1, time_us: 0, nodes, cut: [], drops: [], elections: [], leader: null, since: [], phase: null, violation: null };
  }

  /** Applies event number `i` to `st` (mutating it). */
  function applyTrace(st, ev, i) {
    const w = ev.what;
    st.index = i;
    st.time_us = ev.time_us;
    const n = typeof w.node === 'number' ? st.nodes[w.node] : null;
    switch (w.type) {
      case 'phase': st.phase = w.name; break;
      case 'role':
        if (!n) break;
        n.role = w.role; n.term = w.term; n.leader = w.leader; n.up = true;
        if (w.leader === w.node && !(st.leader && st.leader.id === w.node && st.leader.term === w.term)) {
          const prev = st.leader;
          const [cause, causeKind] = traceCause(st, prev, w.node);
          const campaigns = st.since.filter((s) => s.type === 'role' && (s.role === 'candidate' || s.role === 'pre-candidate')).length;
          st.elections.push({
            term: w.term, winner: w.node, time_us: ev.time_us, causeKind,
            cause: cause + (campaigns ? `; ${campaigns} campaign step(s) seen` : ''),
          });
          st.leader = { id: w.node, term: w.term };
          st.since = [];
        } else if (w.role === 'candidate' || w.role === 'pre-candidate') {
          st.since.push(w);
        }
        break;
      case 'commit': if (n) n.commit = w.index; break;
      case 'crash':
        if (n) { n.up = false; n.role = 'down'; n.note = `crashed: ${w.reason}`; }
        st.since.push(w);
        break;
      case 'storage_failed':
        if (n) { n.up = false; n.role = 'down'; n.note = `storage failed: ${w.error}`; }
        st.since.push(w);
        break;
      case 'restart':
        if (n) {
          Object.assign(n, { up: true, role: 'follower', term: w.term, commit: w.commit, snapshot: w.snapshot, leader: null, paused: false, note: null });
        }
        break;
      case 'pause': if (n) n.paused = true; st.since.push(w); break;
      case 'resume': if (n) n.paused = false; break;
      case 'partition': st.cut = w.cut.map(([a, b]) => `${a}>${b}`); st.since.push(w); break;
      case 'heal': st.cut = []; break;
      case 'drop':
        st.drops.push({ key: `${w.from}>${w.to}`, time_us: ev.time_us });
        if (st.drops.length > 64) st.drops.shift();
        break;
      case 'transfer': st.since.push(w); break;
      case 'compact':
      case 'install_snapshot': if (n) n.snapshot = w.index; break;
      case 'violation': st.violation = `${w.check}: ${w.message}`; break;
      default: break;
    }
  }

  function traceCause(st, prev, winner) {
    if (!prev) return ['first leader of the run', 'initial'];
    const about = (s) => s.node === prev.id || s.leader === prev.id;
    for (let k = st.since.length - 1; k >= 0; k -= 1) {
      const s = st.since[k];
      if (s.type === 'transfer' && s.to === winner) return [`leadership transfer n${s.leader} → n${s.to} (${s.result})`, 'transfer'];
      if (s.type === 'crash' && about(s)) return [`leader n${prev.id} crashed (${s.reason})`, 'killed'];
      if (s.type === 'storage_failed' && about(s)) return [`leader n${prev.id}'s storage failed`, 'killed'];
      if (s.type === 'pause' && about(s)) return [`leader n${prev.id} was paused`, 'paused'];
      if (s.type === 'partition' && s.cut.some(([a, b]) => a === prev.id || b === prev.id)) {
        return [`partition (${s.kind}) cut leader n${prev.id} off`, 'isolated'];
      }
    }
    return [`n${winner}'s election timer ran out (leader n${prev.id} of term ${prev.term} not heard from in time)`, 'lapsed'];
  }

  function describe(w) {
    switch (w.type) {
      case 'start': return `start: ${w.description}`;
      case 'phase': return `=== phase: ${w.name} ===`;
      case 'role':
        if (w.leader === w.node) return `n${w.node} LEADS term ${w.term}`;
        return `n${w.node} ${w.role} in term ${w.term}, ${w.leader ? 'leader n' + w.leader : 'no leader'}`;
      case 'commit': return `n${w.node} (leader) committed up to ${w.index}; config ${w.config}`;
      case 'crash': return `n${w.node} CRASHED (${w.reason}), ${w.lost_writes} unsynced writes lost`;
      case 'restart': return `n${w.node} restarted: term ${w.term}, commit ${w.commit}, snapshot ${w.snapshot}`;
      case 'slow_link': return `n${w.node}'s outgoing messages delayed by ${(w.extra_us / 1000).toFixed(3)}ms`;
      case 'pause': return `n${w.node} paused until ${simTime(w.until_us)}`;
      case 'clock_jump': return `n${w.node}'s clock jumped forward by ${(w.by_us / 1000).toFixed(3)}ms`;
      case 'resume': return `n${w.node} resumed`;
      case 'partition': return `PARTITION (${w.kind}), cut links: ${w.cut.map(([a, b]) => `${a}->${b}`).join(' ')}`;
      case 'heal': return 'network healed';
      case 'drop': return `dropped ${w.msg} n${w.from}->n${w.to} (${w.reason})`;
      case 'duplicate': return `duplicated ${w.msg} n${w.from}->n${w.to}`;
      case 'disk_fault': return `n${w.node}: ${w.fault}`;
      case 'storage_failed': return `n${w.node}: STORAGE FAILED (${w.error})`;
      case 'membership': return `membership change ${w.change} at leader n${w.leader}: ${w.result}`;
      case 'transfer': return `leadership transfer n${w.leader} -> n${w.to}: ${w.result}`;
      case 'compact': return `n${w.node} compacted log up to ${w.index}`;
      case 'install_snapshot': return `n${w.node} installed snapshot at ${w.index}`;
      case 'invoke': return `client c${w.client} op#${w.op} invokes ${w.what} at n${w.node}`;
      case 'retry': return `client c${w.client} op#${w.op} retries at n${w.node} (${w.why})`;
      case 'complete': return `client c${w.client} op#${w.op} -> ${w.result}`;
      case 'violation': return `!!! VIOLATION [${w.check}]: ${w.message}`;
      default: return `${w.type}: ${JSON.stringify(w)}`;
    }
  }

  /** Parses and checks a trace document; throws with a reason if it is not one. */
  function parseTrace(text) {
    let doc;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new Error(`not JSON: ${e.message}`);
    }
    if (!doc || !Array.isArray(doc.timeline)) {
      throw new Error('no "timeline" array: expected the file `raft-sim replay --seed S --json FILE` writes');
    }
    doc.timeline.forEach((e, i) => {
      if (!e || typeof e.time_us !== 'number' || !e.what || typeof e.what.type !== 'string') {
        throw new Error(`timeline event ${i} is not {time_us, what: {type, ...}}`);
      }
    });
    if (doc.timeline.length === 0) {
      throw new Error('the timeline is empty (was the trace written by `raft-sim replay --json`?)');
    }
    const ids = traceNodes(doc.timeline);
    if (ids.length === 0) throw new Error('no node appears in the timeline');
    return { doc, ids };
  }

  function loadTraceText(text, name) {
    const { doc, ids } = parseTrace(text);
    const events = doc.timeline;
    // Checkpoints: the state after every CHECKPOINT_EVERY-th event, so a
    // jump anywhere replays at most that many events.
    const checkpoints = [];
    let st = initialTraceState(ids);
    checkpoints.push(structuredClone(st));
    events.forEach((ev, i) => {
      applyTrace(st, ev, i);
      if ((i + 1) % CHECKPOINT_EVERY === 0) checkpoints.push(structuredClone(st));
    });
    dash.trace = {
      name: name || 'trace', doc, events, ids, checkpoints, index: 0, state: null, playing: null,
      roles: events.map((e, i) => (e.what.type === 'role' && e.what.leader === e.what.node ? i : -1)).filter((i) => i >= 0),
    };
    enterTraceMode();
    seek(0);
    return { events: events.length, nodes: ids.length, elections: st.elections.length };
  }

  function stateAt(i) {
    const t = dash.trace;
    const c = Math.floor((i + 1) / CHECKPOINT_EVERY);
    const st = structuredClone(t.checkpoints[Math.min(c, t.checkpoints.length - 1)]);
    for (let k = st.index + 1; k <= i; k += 1) applyTrace(st, t.events[k], k);
    return st;
  }

  function seek(i) {
    const t = dash.trace;
    if (!t) return;
    i = Math.max(0, Math.min(t.events.length - 1, i));
    t.index = i;
    t.state = stateAt(i);
    renderTrace();
  }

  function renderTrace() {
    const t = dash.trace;
    const st = t.state;
    const nodes = t.ids.map((id) => {
      const n = st.nodes[id];
      return {
        // The trace has a commit index only for leaders (and at restarts):
        // shown while the node leads, when it is current.
        id, up: n.up, role: n.up ? n.role : 'down', term: n.term, leader: n.leader, commit: n.up && n.role === 'leader' ? n.commit : null,
        applied: null, last: null, persisted: null, snapshot: n.snapshot, peers: [], paused: n.paused, error: n.note, timer: null,
      };
    });
    // Drops in the last 20 ms of simulated time flash their link.
    const dropped = new Set(st.drops.filter((d) => st.time_us - d.time_us <= 20000).map((d) => d.key));
    const leader = st.leader && st.nodes[st.leader.id] && st.nodes[st.leader.id].up && st.nodes[st.leader.id].role === 'leader' ? st.leader : null;
    render({
      nodes, rates: null, cut: new Set(st.cut), dropped, controls: false, launcher: false,
      summary: `${leader ? `leader: n${leader.id} · term ${leader.term}` : 'no leader'}${st.phase ? ` · phase ${st.phase}` : ''}`,
      ratesNote: 'Trace mode: red dashes are links cut by a partition, red lines just dropped a message. The trace records no sent messages, follower indexes or election timers.',
    });
    renderElections(st.elections, (e) => simTime(e.time_us));
    const only = $('#important-only').checked;
    const around = [];
    for (let k = t.index; k >= 0 && around.length < 25; k -= 1) {
      if (!only || IMPORTANT.has(t.events[k].what.type) || k === t.index) around.unshift(k);
    }
    for (let k = t.index + 1; k < t.events.length && around.length < 50; k += 1) {
      if (!only || IMPORTANT.has(t.events[k].what.type)) around.push(k);
    }
    renderEvents(around.map((k) => ({
      index: k, kind: t.events[k].what.type, text: describe(t.events[k].what), time_us: t.events[k].time_us,
    })), (e) => simTime(e.time_us), t.index);
    $('#scrub').max = String(t.events.length - 1);
    $('#scrub').value = String(t.index);
    $('#trace-position').textContent = `event ${t.index + 1} of ${t.events.length} · ${simTime(st.time_us)} · ${describe(t.events[t.index].what)}`;
    const d = t.doc;
    $('#trace-note').textContent = [
      d.seed !== undefined ? `seed ${d.seed}` : null,
      d.replay ? `replay: ${d.replay}` : null,
      st.violation ? `VIOLATION so far: ${st.violation}` : (d.violation ? 'this run ends in a violation' : 'no violation in this run'),
    ].filter(Boolean).join(' · ');
  }

  function enterTraceMode() {
    dash.mode = 'trace';
    const t = $('.toast');
    if (t) t.hidden = true;
    if (live.timer !== null) { clearTimeout(live.timer); live.timer = null; }
    $('#banner').hidden = true;
    $('#player').hidden = false;
    $('#back-live').hidden = false;
    $('#events-title').textContent = 'Timeline';
    $('#mode').textContent = `Simulator trace: ${dash.trace.name}`;
    $('#footer-note').textContent = 'Keys: ← → step, space plays.';
  }

  function leaveTraceMode() {
    stopPlaying();
    dash.trace = null;
    dash.mode = 'live';
    $('#player').hidden = true;
    $('#back-live').hidden = true;
    $('#events-title').textContent = 'Events';
    $('#mode').textContent = 'connecting…';
    diagram.key = '';
    poll();
  }

  function stopPlaying() {
    const t = dash.trace;
    if (t && t.playing) { clearInterval(t.playing); t.playing = null; }
    $('#play').textContent = '▶ play';
  }

  function togglePlay() {
    const t = dash.trace;
    if (!t) return;
    if (t.playing) { stopPlaying(); return; }
    $('#play').textContent = '■ pause';
    t.playing = setInterval(() => {
      const step = Number($('#speed').value) || 1;
      if (t.index >= t.events.length - 1) { stopPlaying(); return; }
      // Stepping forward applies events to the current state: no replay.
      const end = Math.min(t.events.length - 1, t.index + step);
      for (let k = t.index + 1; k <= end; k += 1) applyTrace(t.state, t.events[k], k);
      t.index = end;
      renderTrace();
    }, 100);
  }

  function step(kind) {
    const t = dash.trace;
    if (!t) return;
    if (kind === 'first') seek(0);
    else if (kind === 'last') seek(t.events.length - 1);
    else if (kind === 'back') seek(t.index - 1);
    else if (kind === 'forward') seek(t.index + 1);
    else if (kind === 'next-role') {
      const next = t.roles.find((i) => i > t.index);
      seek(next === undefined ? t.events.length - 1 : next);
    }
  }

  $('#trace-file').addEventListener('change', async (ev) => {
    const file = ev.target.files && ev.target.files[0];
    if (!file) return;
    try {
      const info = loadTraceText(await file.text(), file.name);
      toast(`loaded ${file.name}: ${info.events} events, ${info.nodes} nodes, ${info.elections} elections`);
    } catch (e) {
      toast(`${file.name}: ${e.message}`, true);
    }
    ev.target.value = '';
  });
  $('#back-live').addEventListener('click', leaveTraceMode);
  $('#play').addEventListener('click', togglePlay);
  $('#player').addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-step]');
    if (b) { stopPlaying(); step(b.dataset.step); }
  });
  $('#scrub').addEventListener('input', (ev) => { stopPlaying(); seek(Number(ev.target.value)); });
  $('#important-only').addEventListener('change', () => { if (dash.trace) renderTrace(); });
  document.addEventListener('keydown', (ev) => {
    if (dash.mode !== 'trace' || ev.target.tagName === 'INPUT' || ev.target.tagName === 'SELECT') return;
    if (ev.key === 'ArrowRight') { stopPlaying(); step('forward'); ev.preventDefault(); }
    if (ev.key === 'ArrowLeft') { stopPlaying(); step('back'); ev.preventDefault(); }
    if (ev.key === ' ') { togglePlay(); ev.preventDefault(); }
  });

  poll();
})();
