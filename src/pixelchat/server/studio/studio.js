// The pixelchat studio: plain JavaScript over the public API (the same routes any client uses).
// Views are sections of one page, chosen by the address's #fragment, so Back and bookmarks work.

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

const state = {
  me: null, csrf: null, styles: [], rooms: [],
  session: null, sessionEvents: null,
  asides: [], // answers that drew nothing (a question, a change the model cannot make): shown after their turn
  room: null, roomEvents: null,
  seed: randomSeed(),
  gallery: { q: '', before: null },
  duel: null, voted: new Set(), // pairs voted on in this visit (the server keeps one vote per pair)
  upload: null, // { blob, width, height }
};

function randomSeed() { return Math.floor(Math.random() * 2 ** 31); }

// --- talking to the API ---------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, code, retryAfter) {
    super(message);
    Object.assign(this, { status, code, retryAfter });
  }
}

async function api(method, path, { json, form, signal } = {}) {
  const headers = {};
  if (method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal, credentials: 'same-origin' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'The server cannot be reached. Is pixelchat serve still running?', 'network');
  }
  if (!response.ok) throw await errorOf(response);
  if (method !== 'GET') clearError(); // an action went through: an earlier error no longer holds
  return response;
}

const getJSON = async (path) => (await api('GET', path)).json();
const sendJSON = async (method, path, json) => {
  const response = await api(method, path, { json });
  return response.status === 204 ? null : response.json();
};

async function errorOf(response) {
  let message = `The server answered ${response.status}.`, code = null;
  try {
    const body = await response.json();
    if (body && body.error) ({ message, code } = body.error);
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(response.status, message, code, response.headers.get('Retry-After'));
}

// Every error the server can return, said plainly.
function explain(e) {
  if (!(e instanceof ApiError)) return `Something went wrong in the page: ${e.message}`;
  const wait = e.retryAfter ? ` Try again in ${e.retryAfter} s.` : ' Try again in a moment.';
  if (e.code === 'content_policy_violation') {
    // the server's own sentence when it says what blocked it; else one that does
    return /content policy|withheld/i.test(e.message) ? sentence(e.message) : `Blocked by the content policy: ${e.message}`;
  }
  switch (e.status) {
    case 0: return e.message;
    case 401: return state.me ? 'Your sign-in has ended. Please sign in again.' : e.message;
    case 403: return `Not allowed: ${e.message}`;
    case 404: return `Not found: ${e.message}`;
    case 409: return `Conflict: ${e.message}`;
    case 413: return `That file is too large. ${e.message}`;
    case 415: return `That file is not a picture pixelchat can read (PNG, JPEG or WebP). ${e.message}`;
    case 422: return `The request was not valid: ${e.message}`;
    case 429: return `Too many requests.${wait}`;
    case 503: return `The server is busy.${wait}`;
    default: return e.status >= 500 ? `The server failed on this request: ${e.message}` : e.message;
  }
}

const sentence = (text) => {
  const s = text.trim();
  return s.charAt(0).toUpperCase() + s.slice(1) + (/[.!?]$/.test(s) ? '' : '.');
};

let noticeTimer;
function clearError() {
  const box = $('#notice');
  if (box.className === 'error' && !box.hidden) { box.hidden = true; clearTimeout(noticeTimer); }
}

function notify(text, kind = 'error') {
  const box = $('#notice');
  $('#notice-text').textContent = text;
  box.className = kind;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, kind === 'error' ? 12000 : 4000);
}

function failed(e) {
  if (e && e.name === 'AbortError') return;
  notify(explain(e));
  if (e instanceof ApiError && e.status === 401 && state.me) signedOut();
}

function say(text) { $('#status').textContent = text; }

// Run ``fn`` with ``button`` disabled and a status line; errors become notices.
async function busy(button, text, fn) {
  if (button) button.disabled = true;
  say(text);
  try {
    return await fn();
  } catch (e) {
    failed(e);
  } finally {
    if (button) button.disabled = false;
    say('');
  }
}

// --- small builders --------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

const fileOf = (id) => `/api/images/${encodeURIComponent(id)}/file`;
const when = (iso) => new Date(iso).toLocaleString();

function picture(id, alt) {
  return el('img', { src: fileOf(id), alt: alt || 'picture', class: 'pixel', dataset: { id } });
}

// A 1–5 star rating of one picture: radio buttons, so arrow keys work.
function stars(imageId, mine) {
  const name = `stars-${imageId}-${Math.random().toString(36).slice(2, 7)}`;
  const group = el('span', { class: 'stars', role: 'radiogroup', 'aria-label': 'Your rating', dataset: { image: imageId } });
  for (let n = 1; n <= 5; n++) {
    const input = el('input', { type: 'radio', name, value: n, id: `${name}-${n}`, checked: mine === n,
      'aria-label': `${n} star${n > 1 ? 's' : ''}` });
    input.addEventListener('change', () => rate(imageId, n, group));
    group.append(input, el('label', { for: `${name}-${n}`, title: `${n}` }, '★'));
  }
  return group;
}

async function rate(imageId, n, group) {
  try {
    await sendJSON('PUT', `/api/images/${encodeURIComponent(imageId)}/rating`, { stars: n });
    group.dataset.rated = n;
    say(`Rated ${n} of 5.`);
  } catch (e) { failed(e); }
}

async function fillStars(container, imageId) {
  container.replaceChildren();
  if (!imageId) return;
  let mine = null;
  try { mine = (await getJSON(`/api/images/${encodeURIComponent(imageId)}/rating`)).mine; } catch { /* shown unrated */ }
  const filled = stars(imageId, mine);
  if (container.id) filled.id = container.id;
  if (mine) filled.dataset.rated = mine;
  container.replaceWith(filled);
}

// A card for a stored picture: the picture, its prompt, rating, download and more.
function card(image, { onDelete, extra } = {}) {
  const li = el('li', { class: 'card', dataset: { id: image.id } });
  const link = el('a', { class: 'button small', href: fileOf(image.id), download: `pixelchat-${image.id}.png` }, 'Download');
  const actions = el('div', { class: 'row' }, link);
  if (image.session_id) {
    actions.append(el('a', { class: 'button small', href: `#chat/${image.session_id}` }, 'Conversation'));
  }
  if (onDelete) {
    actions.append(el('button', { type: 'button', class: 'small danger', onclick: () => onDelete(image, li) }, 'Delete'));
  }
  const rating = el('span', { class: 'stars' });
  const seed = image.record && Number.isInteger(image.record.seed) ? el('p', { class: 'hint seed' }, `seed ${image.record.seed}`) : null;
  li.append(picture(image.id, image.prompt), el('p', { class: 'prompt' }, image.prompt || '(no prompt)'), seed,
    rating, actions);
  if (extra) li.append(extra);
  fillStars(rating, image.id); // the caller's stars, as the server has them
  return li;
}

// --- palettes and styles ---------------------------------------------------------------------

const DEFAULT_PALETTE = ['#1d3557', '#457b9d', '#a8dadc', '#f1faee', '#e63946'];

function setupPalette(fieldset) {
  for (const colour of DEFAULT_PALETTE) {
    fieldset.append(el('input', { type: 'color', value: colour, 'aria-label': 'palette colour' }));
  }
}

function paletteOf(fieldset) {
  if (!$('.palette-on', fieldset).checked) return null;
  return $$('input[type=color]', fieldset).map((input) => input.value);
}

async function loadStyles() {
  state.styles = await getJSON('/api/styles');
  for (const select of $$('select.styles')) {
    select.replaceChildren(...state.styles.map((s) => el('option', { value: s.name, title: s.description }, s.name)));
    select.value = 'none';
  }
}

// The sizes the served model draws (its upsampler's too); the choice is kept in this browser.
async function loadSizes() {
  let model;
  try { model = (await getJSON('/v1/models')).data[0]; } catch { return; }
  const sizes = model.sizes || [];
  const kept = localStorage.getItem('pixelchat.size');
  $('#size').replaceChildren(...sizes.map((s) => el('option', { value: s }, s.replace('x', ' × '))));
  $('#size').value = sizes.includes(kept) ? kept : (model.default_size || sizes[0]);
  loadPipelineSettings(model.pipeline);
}

// A diffusion pipeline's steps, guidance and scheduler, at the served defaults; hidden for the
// built-in models, which take none.
function loadPipelineSettings(pipeline) {
  $('#pipeline-settings').hidden = !pipeline;
  if (!pipeline) return;
  $('#steps').value = pipeline.steps;
  $('#guidance').value = pipeline.guidance;
  const own = el('option', { value: '' }, 'its own');
  $('#scheduler').replaceChildren(own, ...pipeline.schedulers.map((name) => el('option', { value: name }, name)));
  $('#scheduler').value = pipeline.scheduler || '';
}

// --- signing in ------------------------------------------------------------------------------

async function start() {
  $('#notice-close').addEventListener('click', () => { $('#notice').hidden = true; });
  $('#smooth').addEventListener('change', (e) => document.body.classList.toggle('smooth', e.target.checked));
  $('#login-form').addEventListener('submit', login);
  $('#local-start').addEventListener('click', takeLocalAccount);
  $('#logout').addEventListener('click', logout);
  setupPalette($('#create-palette'));
  setupPalette($('#chat-palette'));
  setupCreate();
  setupChat();
  renderSession(null);
  setupDescribe();
  setupGallery();
  setupCompare();
  setupRooms();
  window.addEventListener('hashchange', route);
  try {
    const me = await getJSON('/api/me');
    await signedIn(me.name, me.csrf_token);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) failed(e);
    signedOut();
  }
}

async function login(event) {
  event.preventDefault();
  const button = $('button[type=submit]', event.target);
  await busy(button, 'Signing in…', async () => {
    const answer = await sendJSON('POST', '/api/login', { name: $('#login-name').value, password: $('#login-password').value });
    $('#login-password').value = '';
    await signedIn(answer.user.name, answer.csrf_token);
  });
}

async function logout() {
  try { await api('POST', '/api/logout'); } catch { /* signed out either way */ }
  signedOut();
}

async function signedIn(name, csrf) {
  state.me = name;
  state.csrf = csrf;
  $('#me').textContent = name;
  $('#who').hidden = false;
  $('#tabs').hidden = false;
  document.body.dataset.user = name;
  await loadStyles();
  await loadSizes();
  await loadRooms();
  if (!location.hash || location.hash === '#login') location.hash = '#create';
  else route();
}

function signedOut() {
  state.me = state.csrf = null;
  closeStreams();
  $('#who').hidden = true;
  $('#tabs').hidden = true;
  delete document.body.dataset.user;
  show('login');
  $('#login-name').focus();
  offerLocalAccount();
}

// First run on one's own machine (loopback, no accounts yet): one click instead of the CLI.
async function offerLocalAccount() {
  let offer = { available: false };
  try { offer = await getJSON('/api/local-account'); } catch { /* sign in as usual */ }
  $('#local-account').hidden = !offer.available;
}

async function takeLocalAccount() {
  await busy($('#local-start'), 'Starting…', async () => {
    const answer = await sendJSON('POST', '/api/local-account', {});
    $('#local-account').hidden = true;
    await signedIn(answer.user.name, answer.csrf_token);
  });
}

// --- views -----------------------------------------------------------------------------------

function show(view) {
  for (const section of $$('main > section')) section.hidden = section.id !== `view-${view}`;
  for (const link of $$('#tabs a')) {
    if (link.dataset.view === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.body.dataset.view = view;
}

function route() {
  if (!state.me) return signedOut();
  const [view, arg] = location.hash.slice(1).split('/');
  const views = { create: openCreate, chat: openChat, describe: () => show('describe'), gallery: openGallery,
    compare: openCompare, rooms: openRooms };
  (views[view] || openCreate)(arg ? decodeURIComponent(arg) : null);
}

function closeStreams() {
  if (state.sessionEvents) state.sessionEvents.close();
  if (state.roomEvents) state.roomEvents.close();
  state.sessionEvents = state.roomEvents = null;
}

// --- create: live preview, variations --------------------------------------------------------

const preview = { timer: null, inFlight: false, again: false, url: null, count: 0 };

function setupCreate() {
  $('#seed').value = state.seed;
  $('#seed').addEventListener('change', () => { state.seed = Math.max(0, parseInt($('#seed').value, 10) || 0); schedulePreview(0); });
  $('#new-seed').addEventListener('click', () => { state.seed = randomSeed(); $('#seed').value = state.seed; schedulePreview(0); });
  for (const id of ['#prompt', '#negative']) $(id).addEventListener('input', () => schedulePreview());
  for (const id of ['#style', '#create-palette']) $(id).addEventListener('change', () => schedulePreview(0));
  $('#size').addEventListener('change', (e) => { localStorage.setItem('pixelchat.size', e.target.value); schedulePreview(0); });
  for (const id of ['#steps', '#guidance', '#scheduler']) $(id).addEventListener('change', () => schedulePreview(0));
  $('#live').addEventListener('change', () => schedulePreview(0));
  $('#prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $('#create-form').requestSubmit(); }
  });
  $('#create-form').addEventListener('submit', drawMany);
  $('#start-chat').addEventListener('click', startChatFromPrompt);
}

function openCreate() {
  closeStreams();
  show('create');
}

function generationFields() {
  const fields = { prompt: $('#prompt').value.trim(), seed: state.seed };
  const negative = $('#negative').value.trim();
  const style = $('#style').value;
  const palette = paletteOf($('#create-palette'));
  if (negative) fields.negative_prompt = negative;
  if (style && style !== 'none') fields.style = style;
  if (palette) fields.palette = palette;
  if ($('#size').value) fields.size = $('#size').value;
  if (!$('#pipeline-settings').hidden) {
    if ($('#steps').value) fields.steps = parseInt($('#steps').value, 10);
    if ($('#guidance').value) fields.guidance = parseFloat($('#guidance').value);
    if ($('#scheduler').value) fields.scheduler = $('#scheduler').value;
  }
  return fields;
}

// Debounced, and never more than one request in flight: the newest words win.
function schedulePreview(delay = 150) {
  clearTimeout(preview.timer);
  if (!$('#live').checked) return;
  preview.timer = setTimeout(runPreview, delay);
}

async function runPreview() {
  if (preview.inFlight) { preview.again = true; return; }
  const fields = generationFields();
  if (!fields.prompt) return;
  preview.inFlight = true;
  try {
    const response = await api('POST', '/api/preview', { json: fields });
    const blob = await response.blob();
    const img = $('#preview');
    if (preview.url) URL.revokeObjectURL(preview.url);
    preview.url = URL.createObjectURL(blob);
    img.src = preview.url;
    img.hidden = false;
    img.dataset.prompt = fields.prompt;
    img.dataset.count = ++preview.count;
    const side = fields.size ? ` · ${fields.size.replace('x', ' × ')}` : '';
    $('#preview-caption').textContent = `${fields.prompt} · seed ${response.headers.get('X-Pixelchat-Seed') || fields.seed}${side}`;
  } catch (e) {
    failed(e);
  } finally {
    preview.inFlight = false;
    if (preview.again) { preview.again = false; runPreview(); }
  }
}

async function drawMany(event) {
  event.preventDefault();
  const fields = generationFields();
  if (!fields.prompt) return notify('Describe a picture first.');
  // the previewed picture's seed: the first of the four is the preview, the others the next seeds
  await busy($('#draw'), 'Drawing…', async () => {
    const answer = await sendJSON('POST', '/v1/images/generations', { ...fields, n: 4 });
    const list = $('#variations');
    $('#variations-title').hidden = false;
    const cards = answer.data.map((d, i) => card({ id: d.id, prompt: d.revised_prompt || fields.prompt,
      record: { seed: fields.seed + i } }));
    list.prepend(...cards);
    if (!$('#seed-lock').checked) say(`Drawn from seed ${fields.seed}; “New seed” draws other pictures.`);
  });
}

async function startChatFromPrompt() {
  const fields = generationFields();
  if (!fields.prompt) return notify('Describe a picture first.');
  await busy($('#start-chat'), 'Starting a conversation…', async () => {
    const body = { title: fields.prompt.slice(0, 60), style: fields.style || 'none' };
    if (fields.size) body.size = parseInt(fields.size, 10);
    if ($('#seed-lock').checked) body.seed = state.seed;
    if (fields.palette) body.palette = fields.palette;
    const session = await sendJSON('POST', '/api/sessions', body);
    let text = fields.prompt;
    if (fields.negative_prompt) await sendJSON('POST', `/api/sessions/${session.id}/messages`, { text: `avoid ${fields.negative_prompt}` });
    await sendJSON('POST', `/api/sessions/${session.id}/messages`, { text });
    location.hash = `#chat/${session.id}`;
  });
}

// --- chat: a conversation with its history tree ----------------------------------------------

function setupChat() {
  $('#new-session').addEventListener('submit', newSession);
  $('#say').addEventListener('submit', sendMessage);
  $('#message').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('#say').requestSubmit(); }
  });
  $('#undo').addEventListener('click', () => act('undo'));
  $('#chat-style').addEventListener('change', (e) => sendText(`/style ${e.target.value}`));
  $('#chat-negative').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); if (e.target.value.trim()) sendText(`avoid ${e.target.value.trim()}`).then(() => { e.target.value = ''; }); }
  });
  $('.palette-on', $('#chat-palette')).addEventListener('change', applyChatPalette);
  for (const input of $$('input[type=color]', $('#chat-palette'))) input.addEventListener('change', applyChatPalette);
  document.addEventListener('keydown', (e) => {
    const typing = ['INPUT', 'TEXTAREA', 'SELECT'].includes(document.activeElement.tagName);
    if (document.body.dataset.view === 'chat' && !typing && (e.ctrlKey || e.metaKey) && e.key === 'z') {
      e.preventDefault();
      act('undo');
    }
  });
}

function applyChatPalette() {
  const palette = paletteOf($('#chat-palette'));
  sendText(palette ? `/palette ${palette.join(',')}` : '/palette none');
}

async function openChat(sessionId) {
  show('chat');
  await loadSessions();
  if (sessionId) await loadSession(sessionId);
  else if (!state.session) renderSession(null);
}

async function loadSessions() {
  try {
    const { data } = await getJSON('/api/sessions');
    const rooms = Object.fromEntries(state.rooms.map((r) => [r.id, r.name]));
    $('#sessions').replaceChildren(...data.map((s) => el('li', {},
      el('a', { href: `#chat/${s.id}`, 'aria-current': state.session && state.session.id === s.id ? 'true' : null },
        s.title || 'Untitled', s.room_id ? el('span', { class: 'tag' }, rooms[s.room_id] || 'room') : null))));
  } catch (e) { failed(e); }
}

async function newSession(event) {
  event.preventDefault();
  await busy($('button', event.target), 'Starting…', async () => {
    const body = { title: $('#session-title').value.trim() };
    if ($('#session-room').value) body.room_id = $('#session-room').value;
    const session = await sendJSON('POST', '/api/sessions', body);
    $('#session-title').value = '';
    location.hash = `#chat/${session.id}`;
  });
}

async function loadSession(sessionId) {
  try {
    const session = await getJSON(`/api/sessions/${encodeURIComponent(sessionId)}`);
    if (!state.sessionEvents || state.sessionEvents.sessionId !== session.id) follow(session.id);
    state.session = session;
    renderSession(session);
    loadSessions();
  } catch (e) {
    failed(e);
  }
}

// Other people's turns in a shared conversation arrive as server-sent events.
function follow(sessionId) {
  if (state.sessionEvents) state.sessionEvents.close();
  const events = new EventSource(`/api/sessions/${encodeURIComponent(sessionId)}/events`);
  events.addEventListener('turn', () => {
    if (state.session && state.session.id === sessionId) loadSession(sessionId);
  });
  events.sessionId = sessionId;
  state.sessionEvents = events;
}

function renderSession(session) {
  const form = $('#say');
  const viewer = session && session.role === 'viewer';
  $('#session-role').hidden = !viewer;
  $('#session-role').textContent = viewer ? 'You are a viewer in this room: you can watch, rate and vote, but not change the picture.' : '';
  for (const control of $$('textarea, input, select, button', form)) control.disabled = !session || viewer;
  $('#undo').disabled = !session || viewer;
  document.body.dataset.role = session ? session.role : '';
  document.body.dataset.session = session ? session.id : '';
  if (!session) {
    $('#log').replaceChildren();
    $('#tree').replaceChildren();
    $('#current').hidden = true;
    $('#picture-actions').hidden = true;
    return;
  }
  const nodes = Object.fromEntries(session.nodes.map((n) => [n.id, n]));
  const path = session.path.map((id) => nodes[id]);
  // the conversation so far: each turn on the way to the current picture
  const shared = Boolean(session.room_id); // in a room, each turn says who said it
  $('#log').replaceChildren(...path.flatMap((n) => [
    el('li', { class: 'user', dataset: { author: n.author || '' } },
      shared && n.author ? el('span', { class: 'author' }, n.author === state.me ? 'you' : n.author) : null,
      n.message || `(${n.kind})`),
    el('li', { class: 'reply', dataset: { node: n.id } }, el('p', {}, n.reply),
      n.prompt ? el('p', { class: 'revised' }, 'Prompt: ', el('q', {}, n.prompt)) : null),
  ]));
  for (const a of state.asides.filter((a) => a.session === session.id && a.node === session.current)) {
    // a prompt declined for naming nothing the model draws can be drawn all the same
    const anyway = a.declined && !viewer
      ? el('button', { type: 'button', class: 'draw-anyway', onclick: (e) => drawAnyway(a, e.currentTarget) }, 'Draw anyway') : null;
    $('#log').append(el('li', { class: 'user' }, a.message), el('li', { class: 'reply aside' }, el('p', {}, a.reply), anyway));
  }
  $('#log').scrollTop = $('#log').scrollHeight; // the newest turn, scrolling the log only (not the page)
  const shown = [...path].reverse().find((n) => n.image_id);
  const img = $('#current');
  if (shown) {
    img.src = fileOf(shown.image_id);
    img.alt = shown.prompt;
    img.dataset.id = shown.image_id;
    img.hidden = false;
    $('#current-caption').textContent = shown.prompt;
    $('#download').href = fileOf(shown.image_id);
    $('#download').setAttribute('download', `pixelchat-${shown.image_id}.png`);
    $('#picture-actions').hidden = false;
    fillStars($('#current-stars'), shown.image_id);
  } else {
    img.hidden = true;
    $('#picture-actions').hidden = true;
    $('#current-caption').textContent = viewer ? 'No picture yet.' : 'Say what to draw: "a lake at sunset with pink clouds".';
  }
  renderTree(session);
  const current = nodes[session.current];
  if (current) {
    $('#chat-style').value = current.style || 'none';
  }
}

function renderTree(session) {
  const children = {};
  for (const n of session.nodes) (children[n.parent ?? 'root'] ||= []).push(n);
  const onPath = new Set(session.path);
  const branch = (parent) => (children[parent] || []).map((n) => {
    const button = el('button', { type: 'button', class: 'node', dataset: { node: n.id },
      'aria-current': n.id === session.current ? 'true' : null, disabled: session.role === 'viewer' || n.id === session.current,
      title: n.prompt, onclick: () => act('goto', n.id) },
    n.image_id ? el('img', { src: fileOf(n.image_id), alt: '', class: 'pixel thumb' }) : null,
    el('span', {}, n.message || n.kind));
    const li = el('li', { class: onPath.has(n.id) ? 'on-path' : null }, button);
    const sub = branch(n.id);
    if (sub.length) li.append(el('ul', {}, ...sub));
    return li;
  });
  $('#tree').replaceChildren(...branch('root'));
}

async function sendMessage(event) {
  event.preventDefault();
  const text = $('#message').value.trim();
  if (!text) return;
  if (await sendText(text)) $('#message').value = '';
}

async function sendText(text, anyway = false) {
  if (!state.session) { notify('Start or pick a conversation first.'); return false; }
  const id = state.session.id;
  const done = await busy($('#send'), 'Drawing…', async () => {
    const turn = await sendJSON('POST', `/api/sessions/${id}/messages`, anyway ? { text, anyway } : { text });
    if (!turn.images.length) {
      state.asides.push({ session: id, node: turn.node, message: text, reply: turn.reply, declined: turn.declined });
    }
    await loadSession(id);
    return true;
  });
  return !!done;
}

async function drawAnyway(aside, button) {
  button.disabled = true; // one click, one picture
  state.asides = state.asides.filter((a) => a !== aside);
  if (!(await sendText(aside.message, true))) { // failed (said in the notice): keep the offer
    state.asides.push(aside);
    button.disabled = false;
  }
}

async function act(action, node) {
  if (!state.session) return;
  const id = state.session.id;
  await busy($('#undo'), action === 'undo' ? 'Undoing…' : 'Going back…', async () => {
    await sendJSON('POST', `/api/sessions/${id}/${action}`, action === 'goto' ? { node } : undefined);
    await loadSession(id);
  });
}

// --- describe and edit -----------------------------------------------------------------------

function setupDescribe() {
  const drop = $('#drop');
  $('#file').addEventListener('change', (e) => { if (e.target.files[0]) takeFile(e.target.files[0]); });
  drop.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); $('#file').click(); } });
  for (const type of ['dragenter', 'dragover']) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add('over'); });
  }
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const file = e.dataTransfer.files[0];
    if (file) takeFile(file);
  });
  setupMask();
  $('#edit-form').addEventListener('submit', editUpload);
}

async function takeFile(file) {
  const form = new FormData();
  form.append('image', file);
  await busy(null, 'Reading the picture…', async () => {
    const description = await (await api('POST', '/api/describe', { form })).json();
    await showUpload(file);
    $('#caption').textContent = description.caption;
    $('#describe-prompt').textContent = description.prompt;
    $('#attributes tbody').replaceChildren(...Object.entries(description.attributes).map(([k, v]) =>
      el('tr', {}, el('td', {}, k), el('td', {}, v),
        el('td', {}, `${Math.round(100 * (description.confidence[k] ?? 0))}%`))));
    $('#description').hidden = false;
    $('#edit-form').hidden = false;
  });
}

// Draw the upload on a canvas (its own size; CSS enlarges it) with a mask canvas of the same size on top.
async function showUpload(file) {
  const bitmap = await createImageBitmap(file);
  const canvas = $('#upload-canvas'), mask = $('#mask-canvas');
  for (const c of [canvas, mask]) { c.width = bitmap.width; c.height = bitmap.height; }
  canvas.getContext('2d').drawImage(bitmap, 0, 0);
  mask.getContext('2d').clearRect(0, 0, mask.width, mask.height);
  mask.dataset.painted = '0';
  state.upload = { blob: file, width: bitmap.width, height: bitmap.height };
  $('#canvas-wrap').hidden = false;
}

function setupMask() {
  const mask = $('#mask-canvas');
  let painting = false;
  const paint = (e) => {
    const box = mask.getBoundingClientRect();
    const x = (e.clientX - box.left) * mask.width / box.width, y = (e.clientY - box.top) * mask.height / box.height;
    const radius = Number($('#brush').value) * mask.width / 64;
    const ctx = mask.getContext('2d');
    ctx.fillStyle = 'rgba(255, 40, 80, 1)';
    ctx.beginPath();
    ctx.arc(x, y, radius, 0, 2 * Math.PI);
    ctx.fill();
    mask.dataset.painted = '1';
  };
  mask.addEventListener('pointerdown', (e) => { painting = true; mask.setPointerCapture(e.pointerId); paint(e); });
  mask.addEventListener('pointermove', (e) => { if (painting) paint(e); });
  mask.addEventListener('pointerup', () => { painting = false; });
  $('#clear-mask').addEventListener('click', () => {
    mask.getContext('2d').clearRect(0, 0, mask.width, mask.height);
    mask.dataset.painted = '0';
  });
}

// The painted strokes as OpenAI's mask: transparent where the picture may change, opaque elsewhere.
function maskBlob() {
  const strokes = $('#mask-canvas');
  if (strokes.dataset.painted !== '1') return Promise.resolve(null);
  const out = document.createElement('canvas');
  out.width = strokes.width;
  out.height = strokes.height;
  const ctx = out.getContext('2d');
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.globalCompositeOperation = 'destination-out';
  ctx.drawImage(strokes, 0, 0);
  return new Promise((resolve) => out.toBlob(resolve, 'image/png'));
}

async function editUpload(event) {
  event.preventDefault();
  if (!state.upload) return notify('Choose a picture first.');
  const form = new FormData();
  form.append('image', state.upload.blob, 'image.png');
  form.append('prompt', $('#instruction').value.trim());
  const mask = await maskBlob();
  if (mask) form.append('mask', mask, 'mask.png');
  await busy($('button[type=submit]', event.target), 'Editing…', async () => {
    const answer = await (await api('POST', '/v1/images/edits', { form })).json();
    $('#edits').prepend(...answer.data.map((d) => card({ id: d.id, prompt: d.revised_prompt })));
  });
}

// --- gallery ---------------------------------------------------------------------------------

function setupGallery() {
  $('#search').addEventListener('submit', (e) => {
    e.preventDefault();
    state.gallery = { q: $('#q').value.trim(), before: null };
    loadGallery(false);
  });
  $('#more').addEventListener('click', () => loadGallery(true));
}

function openGallery() {
  closeStreams();
  show('gallery');
  state.gallery.before = null;
  loadGallery(false);
}

async function loadGallery(more) {
  const params = new URLSearchParams({ limit: '24' });
  if (state.gallery.q) params.set('q', state.gallery.q);
  if (more && state.gallery.before) params.set('before', state.gallery.before);
  try {
    const page = await getJSON(`/api/images?${params}`);
    const cards = page.data.map((image) => card(image, { onDelete: deleteImage }));
    if (more) $('#gallery').append(...cards);
    else $('#gallery').replaceChildren(...cards);
    if (!more && !cards.length) {
      $('#gallery').append(el('li', { class: 'hint' }, state.gallery.q ? `No pictures match “${state.gallery.q}”.` : 'No pictures yet.'));
    }
    state.gallery.before = page.data.length ? page.data[page.data.length - 1].created : null;
    $('#more').hidden = !page.has_more;
  } catch (e) { failed(e); }
}

async function deleteImage(image, li) {
  if (!confirm('Delete this picture? This cannot be undone.')) return;
  try {
    await api('DELETE', `/api/images/${encodeURIComponent(image.id)}`);
    li.remove();
  } catch (e) { failed(e); }
}

// --- compare and leaderboard -----------------------------------------------------------------

function setupCompare() {
  $('#vote-a').addEventListener('click', () => vote('a'));
  $('#vote-b').addEventListener('click', () => vote('b'));
  $('#vote-tie').addEventListener('click', () => vote('tie'));
  document.addEventListener('keydown', (e) => {
    if (document.body.dataset.view !== 'compare' || ['INPUT', 'TEXTAREA'].includes(document.activeElement.tagName)) return;
    const choice = { ArrowLeft: 'a', ArrowRight: 'b', '=': 'tie' }[e.key];
    if (choice) { e.preventDefault(); vote(choice); }
  });
}

async function openCompare() {
  closeStreams();
  show('compare');
  await Promise.all([nextDuel(), loadLeaderboard()]);
}

async function nextDuel() {
  try {
    const { data } = await getJSON('/api/images?limit=200');
    // like with like: two pictures of one prompt, from two models where there are such (what the
    // leaderboard ranks), and a pair not voted on in this visit
    const key = (image) => image.prompt.toLowerCase().split(/\s+/).filter(Boolean).join(' ');
    const seen = (a, b) => state.voted.has([a.id, b.id].sort().join(' '));
    const pairs = [];
    for (const [i, a] of data.entries()) {
      for (const b of data.slice(i + 1)) if (key(a) === key(b) && !seen(a, b)) pairs.push([a, b]);
    }
    const rivals = pairs.filter(([a, b]) => a.model && b.model && a.model !== b.model);
    const empty = !pairs.length;
    $('#duel-empty').hidden = !empty;
    $('#duel').hidden = empty;
    for (const id of ['#vote-a', '#vote-b', '#vote-tie']) $(id).disabled = empty;
    if (empty) { state.duel = null; return; }
    const pick = (list) => list[Math.floor(Math.random() * list.length)];
    const [a, b] = pick(rivals.length ? rivals : pairs);
    state.duel = Math.random() < 0.5 ? [a, b] : [b, a];
    for (const [side, image] of [['a', state.duel[0]], ['b', state.duel[1]]]) {
      const img = $(`#duel-${side}`);
      img.src = fileOf(image.id);
      img.dataset.id = image.id;
      img.alt = image.prompt;
      $(`#duel-${side}-caption`).textContent = image.prompt;
    }
  } catch (e) { failed(e); }
}

async function vote(winner) {
  if (!state.duel) return;
  const [a, b] = state.duel;
  state.duel = null;
  try {
    await sendJSON('POST', '/api/votes', { image_a: a.id, image_b: b.id, winner });
    state.voted.add([a.id, b.id].sort().join(' '));
    say(a.model && a.model === b.model ? `Thanks: vote counted for ${a.model} (two of its own pictures).`
      : 'Thanks: vote counted.');
    await Promise.all([nextDuel(), loadLeaderboard()]);
  } catch (e) { state.duel = [a, b]; failed(e); }
}

async function loadLeaderboard() {
  try {
    const board = await getJSON('/api/leaderboard');
    $('#leaderboard tbody').replaceChildren(...board.models.map((m) => el('tr', { dataset: { model: m.model } },
      el('td', {}, m.model), el('td', {}, Math.round(m.score)),
      el('td', { class: 'votes', title: `${m.own_votes} between two of its own pictures` }, m.votes),
      el('td', {}, m.wins), el('td', {}, m.losses), el('td', {}, m.ties),
      el('td', {}, m.mean_stars === null ? '–' : `${m.mean_stars.toFixed(1)} (${m.ratings})`))));
  } catch (e) { failed(e); }
}

// --- rooms -----------------------------------------------------------------------------------

function setupRooms() {
  $('#new-room').addEventListener('submit', async (e) => {
    e.preventDefault();
    await busy($('button', e.target), 'Creating the room…', async () => {
      const room = await sendJSON('POST', '/api/rooms', { name: $('#room-name').value.trim() });
      $('#room-name').value = '';
      await loadRooms();
      location.hash = `#rooms/${room.id}`;
    });
  });
  $('#add-member').addEventListener('submit', async (e) => {
    e.preventDefault();
    const room = state.room;
    await busy($('button', e.target), 'Inviting…', async () => {
      await sendJSON('POST', `/api/rooms/${room.id}/members`, { user: $('#member-name').value.trim(), role: $('#member-role').value });
      $('#member-name').value = '';
      await loadRoom(room.id);
    });
  });
  $('#room-new-session').addEventListener('click', async () => {
    const room = state.room;
    await busy($('#room-new-session'), 'Starting…', async () => {
      const session = await sendJSON('POST', '/api/sessions', { title: `${room.name} ${room.sessions.length + 1}`, room_id: room.id });
      location.hash = `#chat/${session.id}`;
    });
  });
  $('#leave-room').addEventListener('click', async () => {
    const room = state.room;
    if (!confirm(`Leave ${room.name}?`)) return;
    try {
      await api('DELETE', `/api/rooms/${room.id}/members/${encodeURIComponent(state.me)}`);
      await loadRooms();
      location.hash = '#rooms';
    } catch (e) { failed(e); }
  });
}

async function loadRooms() {
  try {
    state.rooms = (await getJSON('/api/rooms')).data;
  } catch (e) { failed(e); return; }
  $('#rooms').replaceChildren(...state.rooms.map((r) => el('li', {},
    el('a', { href: `#rooms/${r.id}` }, r.name, el('span', { class: 'tag' }, r.role)))));
  const choice = $('#session-room');
  choice.replaceChildren(el('option', { value: '' }, 'Just me'),
    ...state.rooms.filter((r) => r.role !== 'viewer').map((r) => el('option', { value: r.id }, r.name)));
}

async function openRooms(roomId) {
  closeStreams();
  show('rooms');
  await loadRooms();
  if (roomId) {
    await loadRoom(roomId);
    followRoom(roomId);
  } else {
    $('#room').hidden = true;
  }
}

async function loadRoom(roomId) {
  try {
    const room = await getJSON(`/api/rooms/${encodeURIComponent(roomId)}`);
    state.room = room;
    renderRoom(room);
  } catch (e) { failed(e); }
}

function renderRoom(room) {
  const owner = room.role === 'owner';
  $('#room').hidden = false;
  $('#room-title').textContent = room.name;
  $('#room-role').textContent = `You are ${room.role === 'owner' ? 'an owner' : `an ${room.role}`.replace('an viewer', 'a viewer')} here.`;
  $('#add-member').hidden = !owner;
  $('#room-new-session').hidden = room.role === 'viewer';
  $('#members tbody').replaceChildren(...room.members.map((m) => {
    const role = owner
      ? el('select', { 'aria-label': `Role of ${m.user}`, onchange: (e) => changeRole(m.user, e.target.value) },
        ...['viewer', 'editor', 'owner'].map((r) => el('option', { value: r, selected: r === m.role }, r)))
      : m.role;
    const remove = owner && m.user !== state.me
      ? el('button', { type: 'button', class: 'small danger', onclick: () => removeMember(m.user) }, 'Remove') : '';
    return el('tr', { dataset: { user: m.user } }, el('td', {}, m.user), el('td', {}, role), el('td', {}, remove));
  }));
  $('#room-sessions').replaceChildren(...room.sessions.map((s) => el('li', {},
    el('a', { href: `#chat/${s.id}` }, s.title || 'Untitled', el('span', { class: 'hint' }, ` · ${when(s.updated)}`)))));
}

async function changeRole(user, role) {
  const room = state.room;
  try {
    await sendJSON('PATCH', `/api/rooms/${room.id}/members/${encodeURIComponent(user)}`, { role });
    say(`${user} is now ${role}.`);
  } catch (e) { failed(e); }
  await loadRoom(room.id);
}

async function removeMember(user) {
  const room = state.room;
  try { await api('DELETE', `/api/rooms/${room.id}/members/${encodeURIComponent(user)}`); } catch (e) { failed(e); }
  await loadRoom(room.id);
}

function followRoom(roomId) {
  if (state.roomEvents) state.roomEvents.close();
  const events = new EventSource(`/api/rooms/${encodeURIComponent(roomId)}/events`);
  const activity = { turn: 'a new turn', member: 'members changed', room: 'the room was renamed', deleted: 'the room was deleted' };
  for (const [type, what] of Object.entries(activity)) {
    events.addEventListener(type, () => {
      $('#room-activity').prepend(el('li', {}, `${new Date().toLocaleTimeString()} · ${what}`));
      if (type === 'deleted') { events.close(); loadRooms(); } else loadRoom(roomId);
    });
  }
  events.addEventListener('error', () => { if (events.readyState === EventSource.CLOSED) say('Live updates stopped; reload to resume.'); });
  state.roomEvents = events;
}

start();
