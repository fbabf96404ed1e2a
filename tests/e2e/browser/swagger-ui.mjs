// Drives a real browser through the gateway's Swagger UI pages and prints what it saw as JSON
// on stdout; tests/e2e/test_swagger_ui.py decides what is right. Run by that test:
//
//   node swagger-ui.mjs < job.json > report.json
//
// job: {"executable", "userDataDir", "pages": [{"url", "screenshot"?, "tryItOut": [...]}],
//       "visits": [url, ...]}
// page: {"url", "screenshot"?: PNG path, "serverChecksOnly"?: bool, "tryItOut": [step, ...]}
// step: {"method", "path", "params"?: {name: value}, "body"?: "raw JSON text"}
//
// playwright-core only drives the browser it is given (Debian's chromium): it downloads none.
// The browser is closed in `finally`, whatever failed; the caller removes the user-data-dir.
import { chromium } from "playwright-core";

// Headless as root on a machine without a display or a network beyond 127.0.0.1: without the
// background-networking switches chromium keeps trying to reach Google's services.
const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const TIMEOUT_MS = 20_000;

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

// Everything the page says or asks for, from the first byte on.
function watch(page) {
  const seen = { console: [], pageErrors: [], cspViolations: [], requests: [], failed: [] };
  page.on("console", (msg) =>
    seen.console.push({ type: msg.type(), text: msg.text(), url: msg.location().url ?? "" }),
  );
  page.on("pageerror", (error) => seen.pageErrors.push(String(error)));
  page.on("request", (request) => seen.requests.push({ method: request.method(), url: request.url() }));
  page.on("requestfailed", (request) =>
    seen.failed.push({ url: request.url(), error: request.failure()?.errorText ?? "" }),
  );
  return seen;
}

async function operations(page) {
  return page.$$eval(".opblock", (blocks) =>
    blocks.map((block) => ({
      method: block.querySelector(".opblock-summary-method")?.textContent.trim().toLowerCase(),
      path: block.querySelector("[data-path]")?.getAttribute("data-path"),
    })),
  );
}

// "Try it out" -> fill in -> Execute, as a person would, and what the page then shows.
async function tryItOut(page, step) {
  const block = page
    .locator(`.opblock-${step.method}`)
    .filter({ has: page.locator(`[data-path="${step.path}"]`) });
  if (!(await block.locator(".opblock-body").count())) {
    await block.locator(".opblock-summary").first().click();
  }
  // Once pressed, "Try it out" turns into "Cancel" (and "Reset"): the next step keeps the form.
  await block.locator("button.try-out__btn").first().waitFor({ timeout: TIMEOUT_MS });
  const tryButton = block.getByRole("button", { name: "Try it out" });
  if (await tryButton.count()) await tryButton.click();
  for (const [name, value] of Object.entries(step.params ?? {})) {
    await block.locator(`tr[data-param-name="${name}"] input`).fill(String(value));
  }
  if (step.body !== undefined) await block.locator("textarea.body-param__text").fill(step.body);

  // Either the request goes out, or Swagger UI refuses it in the browser (its own check of
  // the parameters against the schema) and says why.
  const refusal = block.locator(".validation-errors");
  const sending = page.waitForResponse(
    (r) => ["fetch", "xhr"].includes(r.request().resourceType()) && !r.url().endsWith("/openapi.json"),
    { timeout: TIMEOUT_MS },
  );
  sending.catch(() => {}); // a refused request never answers; the race below decides
  await block.locator("button.execute").click();
  const outcome = await Promise.race([
    sending.then((response) => ({ response })),
    refusal.waitFor({ timeout: TIMEOUT_MS }).then(() => ({ refused: true })),
  ]);
  if (outcome.refused) return { step, refused: (await refusal.innerText()).trim() };
  const { response } = outcome;
  const sent = {
    method: response.request().method(),
    url: response.url(),
    status: response.status(),
    requestId: (await response.allHeaders())["x-request-id"] ?? null,
  };
  // What the person sees: the live response's status cell and body, once rendered.
  const live = block.locator(".live-responses-table .response");
  await live.locator(".response-col_status").filter({ hasText: String(sent.status) }).waitFor({
    timeout: TIMEOUT_MS,
  });
  const shown = {
    status: (await live.locator(".response-col_status").textContent()).trim(),
    body: (await live.locator(".response-col_description .highlight-code pre").first().innerText()).trim(),
    requestUrl: (await block.locator(".request-url pre").textContent()).trim(),
  };
  return { step, sent, shown };
}

// Swagger UI checks parameters against the schema before it sends anything (`abc` for an
// integer id never leaves the page). To see what the service answers to such input through
// the same page, this plugin (swagger-ui's plugin API; only ever added here, never shipped)
// leaves the checking to the server.
function leaveChecksToTheServer() {
  const serverChecks = () => ({
    statePlugins: {
      spec: {
        wrapActions: { validateParams: () => () => ({ type: "test/skip-client-checks" }) },
        wrapSelectors: { validateBeforeExecute: () => () => true },
      },
    },
  });
  let bundle;
  Object.defineProperty(window, "SwaggerUIBundle", {
    configurable: true,
    get: () => bundle,
    set: (real) => {
      bundle = Object.assign(
        (options) => real({ ...options, plugins: [...(options.plugins ?? []), serverChecks] }),
        real,
      );
    },
  });
}

async function checkPage(context, spec) {
  const page = await context.newPage();
  if (spec.serverChecksOnly) await page.addInitScript(leaveChecksToTheServer);
  const seen = watch(page);
  try {
    const response = await page.goto(spec.url, { waitUntil: "networkidle", timeout: TIMEOUT_MS });
    await page.locator(".opblock").first().waitFor({ timeout: TIMEOUT_MS });
    const result = {
      url: spec.url,
      status: response.status(),
      title: await page.title(),
      operations: await operations(page),
      tries: [],
    };
    if (spec.screenshot) await page.screenshot({ path: spec.screenshot, fullPage: true });
    for (const step of spec.tryItOut ?? []) {
      try {
        result.tries.push(await tryItOut(page, step));
      } catch (error) {
        // Reported, not thrown: the test says which step failed, with what the page showed.
        result.tries.push({ step, error: String(error), page: await page.locator(".opblock.is-open").innerText() });
      }
    }
    // The document's own record of CSP violations (the console shows most, not all, of them).
    seen.cspViolations = await page.evaluate(() => window.__cspViolations);
    return { ...result, ...seen };
  } finally {
    await page.close();
  }
}

// A plain visit (the switched-off docs): status, type and body as the browser received them.
async function visit(context, url) {
  const page = await context.newPage();
  try {
    const response = await page.goto(url, { timeout: TIMEOUT_MS });
    return {
      url,
      status: response.status(),
      headers: await response.allHeaders(),
      body: await response.text(),
    };
  } finally {
    await page.close();
  }
}

const job = await readStdin();
const context = await chromium.launchPersistentContext(job.userDataDir, {
  executablePath: job.executable,
  headless: true,
  args: FLAGS,
  viewport: { width: 1280, height: 900 },
});
try {
  // Before any page script runs: record every CSP violation the document reports.
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (event) =>
      window.__cspViolations.push({
        directive: event.effectiveDirective,
        blocked: event.blockedURI,
        sample: event.sample,
      }),
    );
  });
  const report = { pages: [], visits: [] };
  for (const spec of job.pages ?? []) report.pages.push(await checkPage(context, spec));
  for (const url of job.visits ?? []) report.visits.push(await visit(context, url));
  process.stdout.write(JSON.stringify(report));
} finally {
  await context.close();
}
