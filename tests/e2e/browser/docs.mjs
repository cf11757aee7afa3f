// Opens the gateway's /docs in Debian's Chromium (playwright-core, never a downloaded browser), runs "Try it out"
// on CreateUser and then GetUser with the id it returned, reads both 200 answers off the page, saves a
// screenshot, and prints what it saw as one JSON line. tests/e2e/test_docs_in_a_browser.py runs it.
//
//   node docs.mjs --url http://127.0.0.1:8080 --screenshot out.png --user-data-dir /tmp/fresh [--chromium PATH]
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

// The verified way to run Debian's Chromium here: no sandbox as root, no GPU, and no background traffic
// (the closed network refuses it, and nothing may leave the machine anyway).
const CHROMIUM_FLAGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync",
];
// Every wait is bounded; swagger-ui renders in well under a second on loopback.
const TIMEOUT_MS = 15_000;

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    screenshot: { type: "string" },
    "user-data-dir": { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    email: { type: "string", default: `browser-${Date.now()}@example.com` },
  },
});

// Expands an operation, presses "Try it out", lets `fill` set its inputs, executes it and returns the live answer.
async function tryItOut(page, operationId, tag, fill) {
  const block = page.locator(`#operations-${tag}-${operationId}`);
  await block.locator(".opblock-summary").first().click();
  await block.locator("button.try-out__btn").click();
  await fill(block);
  await block.locator("button.execute").click();
  const answer = block.locator(".live-responses-table tbody .response").first();
  await answer.waitFor({ timeout: TIMEOUT_MS });
  const status = (await answer.locator(".response-col_status").innerText()).trim();
  const body = await answer.locator(".response-col_description pre").first().innerText();
  return { block, status: Number.parseInt(status, 10), body: JSON.parse(body) };
}

async function main() {
  const origin = new URL(args.url).origin;
  const offsite = [];
  const context = await chromium.launchPersistentContext(args["user-data-dir"], {
    executablePath: args.chromium, headless: true, args: CHROMIUM_FLAGS, viewport: { width: 1280, height: 1400 },
  });
  try {
    const page = context.pages()[0] ?? await context.newPage();
    page.setDefaultTimeout(TIMEOUT_MS);
    // Everything the page loads must come from the gateway: a CDN request is recorded and refused.
    await page.route("**/*", (route) => {
      const url = route.request().url();
      if (new URL(url).origin === origin) return route.continue();
      offsite.push(url);
      return route.abort();
    });
    await page.goto(`${origin}/docs`);
    await page.locator(".swagger-ui .info .title").waitFor();
    const title = (await page.locator(".swagger-ui .info .title").innerText()).trim();

    const created = await tryItOut(page, "UserService_CreateUser", "UserService", async (block) => {
      await block.locator("textarea.body-param__text").fill(JSON.stringify({ email: args.email, displayName: "Ada" }));
    });
    const userId = created.body?.user?.userId;
    const fetched = await tryItOut(page, "UserService_GetUser", "UserService", async (block) => {
      await block.locator('tr[data-param-name="userId"] input').fill(String(userId));
    });
    await fetched.block.locator(".live-responses-table").scrollIntoViewIfNeeded();
    await page.screenshot({ path: args.screenshot });
    console.log(JSON.stringify({
      title, offsite, created: { status: created.status, body: created.body },
      fetched: { status: fetched.status, body: fetched.body },
    }));
  } finally {
    await context.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
