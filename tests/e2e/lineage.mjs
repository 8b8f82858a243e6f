// Drives a real JupyterLab in Debian's headless chromium (playwright-core, no
// downloaded browser): open the example notebook with the roar kernel, open the
// Lineage panel, run the cells, and check what the panel shows. Started by
// tests/e2e/test_lab.py, which owns the server; this script owns the browser.
//
// Env: LAB_URL, LAB_TOKEN, OUT_DIR, NOTEBOOK, ROAR (the roar CLI), PROJECT_DIR, CHROMIUM.
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', '..', 'labextension', 'package.json'));
const { chromium } = require('playwright-core');

const { LAB_URL, LAB_TOKEN, OUT_DIR, NOTEBOOK, ROAR, PROJECT_DIR } = process.env;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
mkdirSync(OUT_DIR, { recursive: true });

const log = (...a) => console.log('[e2e]', ...a);
let step = 'start';
const check = (cond, msg) => {
  if (!cond) {
    throw new Error(`check failed at ${step}: ${msg}`);
  }
};

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
    '--disable-dev-shm-usage'
  ]
});
const context = await browser.newContext({ viewport: { width: 1500, height: 950 } });
const page = await context.newPage();
const consoleErrors = [];
page.on('console', m => {
  if (m.type() === 'error') consoleErrors.push(m.text());
});
page.on('dialog', d => {
  consoleErrors.push(`unexpected dialog: ${d.message()}`);
  void d.dismiss();
});
const panel = page.locator('#roar-lineage-panel');
const jobNodes = panel.locator('g.roar-node.roar-job');

async function nodeIdsByRef() {
  return await panel.locator('g.roar-node.roar-job').evaluateAll(gs =>
    Object.fromEntries(gs.map(g => [g.dataset.ref, g.dataset.id]))
  );
}
async function edgePairs() {
  return await panel.locator('path.roar-edge').evaluateAll(ps => ps.map(p => `${p.dataset.from}>${p.dataset.to}`));
}

try {
  step = 'open notebook';
  await page.goto(`${LAB_URL}/lab/tree/${NOTEBOOK}?token=${LAB_TOKEN}`);
  await page.locator('.jp-NotebookPanel').first().waitFor({ timeout: 60000 });
  // The kernel named in the notebook's metadata ("roar") starts by itself.
  await page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"], .jp-Toolbar-kernelStatus').first().waitFor({ timeout: 60000 }).catch(() => {});

  step = 'open the Lineage panel';
  const tab = page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="roar-lineage-panel"]');
  await tab.waitFor({ timeout: 30000 });
  check((await tab.getAttribute('title')) === 'Lineage', 'the sidebar tab is titled Lineage');
  await tab.click();
  await panel.waitFor({ state: 'visible' });
  // Widen the sidebar as a user would, by dragging the splitter (the default is ~250 px).
  const handle = page.locator('#jp-main-split-panel > .lm-SplitPanel-handle').first();
  const hb = await handle.boundingBox();
  if (hb) {
    await page.mouse.move(hb.x + hb.width / 2, hb.y + hb.height / 2);
    await page.mouse.down();
    await page.mouse.move(hb.x + 260, hb.y + hb.height / 2, { steps: 8 });
    await page.mouse.up();
  }
  // JupyterLab asks about news in a toast; answer it so it does not cover the notebook.
  await page.locator('.jp-toast-button', { hasText: /^No$/ }).click({ timeout: 5000 }).catch(() => {});

  step = 'no .roar/ yet: a hint, no error';
  await panel.locator('.roar-hint').waitFor({ state: 'visible', timeout: 15000 });
  const hint = await panel.locator('.roar-hint').textContent();
  check(hint.includes('%load_ext roar'), `hint says how to start: ${hint}`);
  check((await page.locator('.jp-Dialog').count()) === 0, 'no dialog');

  step = 'run all cells';
  await page.locator('.jp-NotebookPanel .jp-Notebook').first().click();
  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Run$/ }).click();
  await page.locator('.lm-Menu-itemLabel', { hasText: /^Run All Cells$/ }).click();

  step = 'the panel updates live with the cells as jobs';
  await page.waitForFunction(() => document.querySelectorAll('#roar-lineage-panel g.roar-node.roar-job').length >= 4, null, { timeout: 240000 });
  // The last cell (%roar dag) is roar's own; wait until the notebook is idle so every job is in.
  await page.waitForFunction(() => {
    const prompts = [...document.querySelectorAll('.jp-InputPrompt')].map(p => p.textContent);
    return prompts.length && prompts.every(t => !t.includes('*'));
  }, null, { timeout: 240000 });
  await page.waitForTimeout(1500);
  const refs = await nodeIdsByRef();
  log('job nodes', Object.keys(refs).sort().join(' '));
  for (const r of ['@1', '@2', '@3', '@4']) check(refs[r], `node ${r} drawn`);
  check(!refs['@5'], 'only the four traced cells are jobs');
  const labels = await jobNodes.locator('.roar-label').allTextContents();
  check(labels.some(l => l.startsWith('@2 raw = pd.read_csv("iris.csv")')), `@2 labelled with its first line: ${labels}`);
  const edges = await edgePairs();
  for (const [a, b] of [['@1', '@2'], ['@2', '@3'], ['@3', '@4']]) {
    check(edges.includes(`${refs[a]}>${refs[b]}`), `edge ${a} -> ${b}`);
  }
  check(edges.length === 3, `exactly three job->job edges, got ${edges.length}`);
  const edgeLabels = await panel.locator('.roar-edge-label').allTextContents();
  check(edgeLabels.includes('iris.csv') && edgeLabels.includes('features.parquet'), `edges named by artifacts: ${edgeLabels}`);
  const summary = await panel.locator('.roar-summary').textContent();
  check(/4 jobs/.test(summary) && /capture: /.test(summary), `summary shows count and capture level: ${summary}`);

  step = 'artifacts as nodes';
  await panel.locator('input.roar-artifacts-toggle').check();
  await page.waitForFunction(() => document.querySelectorAll('#roar-lineage-panel g.roar-node.roar-artifact').length >= 4);
  const arts = await panel.locator('g.roar-artifact .roar-label').allTextContents();
  for (const n of ['iris.csv', 'features.parquet', 'model.joblib', 'metrics.json']) check(arts.includes(n), `artifact node ${n}: ${arts}`);
  await panel.locator('input.roar-artifacts-toggle').uncheck();
  await page.waitForFunction(() => document.querySelectorAll('#roar-lineage-panel g.roar-node.roar-artifact').length === 0);

  step = 'click a job: details and the notebook scrolls to its cell';
  await page.locator('.jp-NotebookPanel .jp-Cell').first().click(); // move the active cell away first
  await panel.locator(`g.roar-node[data-id="${refs['@3']}"]`).click();
  const det = panel.locator('.roar-job-details');
  await det.waitFor();
  const src = await det.locator('.roar-source').textContent();
  check(src.includes('LogisticRegression(max_iter=500)'), 'source shown');
  const ins = await det.locator('.roar-inputs li').allTextContents();
  const outs = await det.locator('.roar-outputs li').allTextContents();
  check(ins.some(t => /^[0-9a-f]{8} features\.parquet/.test(t)), `inputs with short hashes: ${ins}`);
  check(outs.some(t => t.includes('model.joblib')) && outs.some(t => t.includes('test.parquet')), `outputs: ${outs}`);
  const status = await det.locator('td[data-key="status"]').textContent();
  const duration = await det.locator('td[data-key="duration"]').textContent();
  check(status.startsWith('ok'), `status: ${status}`);
  check(/\d/.test(duration), `duration: ${duration}`);
  await page.waitForFunction(() => {
    const a = document.querySelector('.jp-NotebookPanel .jp-Cell.jp-mod-active');
    return a && a.textContent.includes('LogisticRegression(max_iter=500)');
  }, null, { timeout: 5000 });
  await panel.locator('button.roar-fit').click();
  await page.waitForTimeout(500);
  await page.screenshot({ path: path.join(OUT_DIR, 'lineage-panel.png') });
  log('screenshot', path.join(OUT_DIR, 'lineage-panel.png'));

  step = 'click an artifact: producer, consumers, reproduce command';
  await det.locator('.roar-outputs button.roar-hash').first().click();
  const ad = panel.locator('.roar-artifact-details');
  await ad.waitFor();
  const prod = await ad.locator('.roar-producers li').allTextContents();
  const cons = await ad.locator('.roar-consumers li').allTextContents();
  check(prod.some(t => t.startsWith('@3')), `producer @3: ${prod}`);
  check(cons.some(t => t.startsWith('@4')), `consumer @4: ${cons}`);
  const hash = await ad.getAttribute('data-hash');
  check((await ad.locator('input.roar-command').inputValue()) === `roar reproduce ${hash}`, 'reproduce command');
  check((await ad.locator('button.roar-copy').count()) === 1, 'copy action');

  step = 'a CLI job with <script> in its command renders as text';
  const cmd = `echo "<script>window.__roarXss=1</script><img src=x onerror=window.__roarXss=2>" > xss.txt`;
  execFileSync(ROAR, ['run', 'sh', '-c', cmd], { cwd: PROJECT_DIR, stdio: 'inherit' });
  await panel.locator('select.roar-scope').selectOption('all');
  await page.waitForFunction(
    () => [...document.querySelectorAll('#roar-lineage-panel g.roar-job .roar-label')].some(t => t.textContent.includes('<script>')),
    null,
    { timeout: 10000 }
  );
  check(!(await page.evaluate(() => window.__roarXss)), 'no script ran');
  check((await panel.locator('img, script').count()) === 0, 'no element created from DB text');
  const xssNode = panel.locator('g.roar-job', { hasText: '<script>' }).first();
  await xssNode.click();
  const shown = await panel.locator('.roar-job-details .roar-source').textContent();
  check(shown === cmd.replace(/^/, "sh -c '").replace(/$/, "'") || shown.includes('<script>window.__roarXss=1</script>'), `command shown as text: ${shown}`);
  check(!(await page.evaluate(() => window.__roarXss)), 'still no script ran');

  step = 'a CLI job rewrites iris.csv: the cells downstream are marked stale';
  execFileSync(ROAR, ['run', 'sh', '-c', 'echo 9.9,9.9,9.9,9.9,0 >> iris.csv'], { cwd: PROJECT_DIR, stdio: 'inherit' });
  await page.waitForFunction(
    ids => ids.every(id => document.querySelector(`#roar-lineage-panel g.roar-node[data-id="${id}"]`)?.classList.contains('roar-stale')),
    [refs['@2'], refs['@3'], refs['@4']],
    { timeout: 10000 }
  );
  check(!(await panel.locator(`g.roar-node[data-id="${refs['@1']}"]`).getAttribute('class')).includes('roar-stale'), '@1 is not stale');
  await panel.locator(`g.roar-node[data-id="${refs['@2']}"]`).click();
  const staleWhy = await panel.locator('.roar-job-details td[data-key="stale"]').textContent();
  check(/iris\.csv rewritten by @\d/.test(staleWhy), `stale reason: ${staleWhy}`);
  check(/3 stale/.test(await panel.locator('.roar-summary').textContent()), 'summary counts stale jobs');
  check((await jobNodes.count()) === 6, 'six jobs in the whole project');
  // The DAG grew while the user had not panned or zoomed: it is refitted, every node in view.
  const canvasBox = await panel.locator('.roar-canvas').boundingBox();
  for (const b of await jobNodes.evaluateAll(gs => gs.map(g => { const r = g.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }))) {
    check(b[0] >= canvasBox.x - 1 && b[2] <= canvasBox.x + canvasBox.width + 1 && b[1] >= canvasBox.y - 1 && b[3] <= canvasBox.y + canvasBox.height + 1, `node in view: ${b}`);
  }
  await page.screenshot({ path: path.join(OUT_DIR, 'lineage-project.png') });

  step = 'a 500-job session stays responsive';
  const big = execFileSync(process.env.PYTHON, [path.join(here, 'big_session.py'), PROJECT_DIR]).toString().trim();
  await page.waitForFunction(id => [...document.querySelectorAll('#roar-lineage-panel select.roar-scope option')].some(o => o.value === id), big, { timeout: 10000 });
  // Measure the main thread while the panel fetches, lays out (worker) and draws 500 jobs.
  await page.evaluate(() => {
    window.__roarGaps = [];
    let last = performance.now();
    const tick = () => {
      const now = performance.now();
      window.__roarGaps.push(now - last);
      last = now;
      if (window.__roarGaps.length < 100000) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  const t0 = Date.now();
  await panel.locator('select.roar-scope').selectOption(big);
  await page.waitForFunction(() => document.querySelectorAll('#roar-lineage-panel g.roar-node.roar-job').length === 500, null, { timeout: 30000 });
  const shownMs = Date.now() - t0;
  await page.waitForTimeout(300);
  const gaps = await page.evaluate(() => window.__roarGaps.slice());
  const worst = Math.max(...gaps);
  log(`500 jobs shown in ${shownMs} ms; layout ${await panel.getAttribute('data-layout-ms')} ms; longest frame ${worst.toFixed(0)} ms`);
  check((await panel.locator('g.roar-node.roar-failed').count()) === 6, 'failed jobs marked');
  check((await panel.getAttribute('data-layout-mode')) === 'worker', 'layout ran in the Web Worker');
  await panel.locator('g.roar-node.roar-job').nth(250).click();
  await panel.locator('.roar-job-details').waitFor();
  writeFileSync(path.join(OUT_DIR, 'big.json'), JSON.stringify({ shownMs, worstFrameMs: worst }, null, 1));

  step = 'a Ray run: the 12 calls of one task fold into one node, unfold and fold again';
  const ray = execFileSync(process.env.PYTHON, [path.join(here, 'ray_session.py'), PROJECT_DIR]).toString().trim();
  await page.waitForFunction(id => [...document.querySelectorAll('#roar-lineage-panel select.roar-scope option')].some(o => o.value === id), ray, { timeout: 10000 });
  await panel.locator('select.roar-scope').selectOption(ray);
  const group = panel.locator('g.roar-node.roar-group');
  await group.waitFor({ timeout: 15000 });
  check((await group.count()) === 1 && (await jobNodes.count()) === 2, 'one group node beside the driver and the collector');
  check((await group.locator('text.roar-label').textContent()) === '12 \u00d7 featurize', 'the group names the function and the count');
  check((await group.getAttribute('data-members')) === '12', 'twelve members');
  check((await panel.locator('path.roar-edge').count()) === 2, 'driver -> group -> collector, edges merged');
  await group.click();
  await panel.locator('.roar-group-details').waitFor();
  check((await panel.locator('.roar-group-details .roar-members li').count()) === 12, 'the details list every call');
  await panel.locator('.roar-group-details button.roar-unfold').click();
  await page.waitForFunction(() => document.querySelectorAll('#roar-lineage-panel g.roar-node.roar-job').length === 14, null, { timeout: 15000 });
  check((await group.count()) === 0, 'unfolded: no group node');
  await page.screenshot({ path: path.join(OUT_DIR, 'lineage-ray-unfolded.png') });
  await jobNodes.filter({ hasText: 'featurize' }).first().click();
  await panel.locator('.roar-job-details button.roar-fold').click();
  await group.waitFor({ timeout: 15000 });
  check((await jobNodes.count()) === 2, 'folded again');
  await page.screenshot({ path: path.join(OUT_DIR, 'lineage-ray-folded.png') });

  const bad = consoleErrors.filter(e => /roar|dialog|NaN|Infinity/i.test(e));
  check(bad.length === 0, `no roar errors in the console: ${bad.join(' | ')}`);
  writeFileSync(path.join(OUT_DIR, 'result.json'), JSON.stringify({ ok: true, refs, edges }, null, 1));
  log('ok');
} catch (err) {
  await page.screenshot({ path: path.join(OUT_DIR, 'failure.png') }).catch(() => {});
  writeFileSync(path.join(OUT_DIR, 'panel.html'), await panel.innerHTML().catch(() => ''));
  console.error(String(err && err.stack || err));
  console.error('console errors:', consoleErrors.join('\n'));
  process.exitCode = 1;
} finally {
  await browser.close();
}
