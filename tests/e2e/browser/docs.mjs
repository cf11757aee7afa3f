// Opens the gateway's /docs over https in Debian's Chromium (playwright-core, never a downloaded browser), the
// mesh's CA trusted through the NSS database in --home (what Chromium on Linux reads; no certificate error is
// ignored), runs "Try it out" on CreateUser, authorizes with a bearer token in Swagger UI's dialog, runs GetUser
// with the id CreateUser returned, logs out and runs it again; reads every answer off the page, saves a
// screenshot, and prints what it saw as one JSON line. tests/e2e/test_docs_in_a_browser.py runs it.
//
//   node docs.mjs --url https://127.0.0.1:8080 --home /tmp/home-with-nssdb --untrusted-home /tmp/empty-home \
//        --token JWT --screenshot out.png --user-data-dir /tmp/fresh [--chromium PATH] [--email ADDRESS]
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
// What Chromium reports for a certificate that chains to a CA it does not trust.
const UNTRUSTED = "net::ERR_CERT_AUTHORITY_INVALID";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    home: { type: "string" },
    "untrusted-home": { type: "string" },
    token: { type: "string" },
    screenshot: { type: "string" },
    "user-data-dir": { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    email: { type: "string", default: `browser-${Date.now()}@example.com` },
  },
});

// A persistent context whose HOME is `home`: its NSS database (~/.pki/nssdb) says which CAs Chromium trusts.
function launch(userDataDir, home) {
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: args.chromium, headless: true, args: CHROMIUM_FLAGS, viewport: { width: 1280, height: 1600 },
    env: { ...process.env, HOME: home },
  });
}

// Without the CA in its NSS database the same Chromium refuses the gateway's certificate: the error it gives.
async function untrustedError(origin) {
  const context = await launch(`${args["user-data-dir"]}-untrusted`, args["untrusted-home"]);
  try {
    const page = context.pages()[0] ?? await context.newPage();
    await page.goto(`${origin}/docs`, { timeout: TIMEOUT_MS });
    return null;
  } catch (error) {
    return String(error.message).includes(UNTRUSTED) ? UNTRUSTED : String(error.message);
  } finally {
    await context.close();
  }
}

// Expands an operation (once), presses "Try it out" (once), lets `fill` set its inputs, executes it and returns the
// live answer.
async function tryItOut(page, operationId, tag, fill) {
  const block = page.locator(`#operations-${tag}-${operationId}`);
  if (!(await block.locator(".opblock-body").isVisible())) await block.locator(".opblock-summary").first().click();
  const tryOut = block.locator("button.try-out__btn");
  if ((await tryOut.innerText()).trim() === "Try it out") await tryOut.click();
  await fill(block);
  const previous = await block.locator(".live-responses-table").count();
  if (previous > 0) await block.locator("button.btn-clear").click();
  await block.locator("button.execute").click();
  const answer = block.locator(".live-responses-table tbody .response").first();
  await answer.waitFor({ timeout: TIMEOUT_MS });
  const status = (await answer.locator(".response-col_status").innerText()).trim();
  const body = await answer.locator(".response-col_description pre").first().innerText();
  return { block, status: Number.parseInt(status, 10), body: JSON.parse(body) };
}

// Swagger UI's "Authorize" dialog: the bearer scheme is an API key in the Authorization header, so the value
// typed is the header's, `Bearer <token>`. With a token it authorizes, without one it logs out; its buttons are
// found by their accessible names, and each click is checked by the button that replaces it.
async function authorize(page, token) {
  await page.locator(".scheme-container button.authorize").click();
  const dialog = page.locator(".dialog-ux .modal-ux");
  await dialog.waitFor();
  const apply = dialog.getByRole("button", { name: "Apply credentials" });
  const remove = dialog.getByRole("button", { name: "Remove authorization" });
  if (token) {
    await dialog.locator(".auth-container input").fill(`Bearer ${token}`);
    await apply.click();
    await remove.waitFor();
  } else {
    await remove.click();
    await apply.waitFor();
  }
  await dialog.getByRole("button", { name: "Close" }).click();
  await dialog.waitFor({ state: "detached" });
}

async function main() {
  const origin = new URL(args.url).origin;
  const untrusted = await untrustedError(origin);
  const offsite = [];
  const sent = [];
  const context = await launch(args["user-data-dir"], args.home);
  try {
    const page = context.pages()[0] ?? await context.newPage();
    page.setDefaultTimeout(TIMEOUT_MS);
    // Everything the page loads must come from the gateway: a CDN request is recorded and refused.
    await page.route("**/*", (route) => {
      const request = route.request();
      if (new URL(request.url()).origin !== origin) {
        offsite.push(request.url());
        return route.abort();
      }
      if (new URL(request.url()).pathname.startsWith("/v1/")) {
        sent.push({ method: request.method(), path: new URL(request.url()).pathname,
                    authorization: request.headers()["authorization"] ?? null });
      }
      return route.continue();
    });
    const response = await page.goto(`${origin}/docs`);
    const security = await response.securityDetails();
    await page.locator(".swagger-ui .info .title").waitFor();
    const title = (await page.locator(".swagger-ui .info .title").innerText()).trim();

    const created = await tryItOut(page, "UserService_CreateUser", "UserService", async (block) => {
      await block.locator("textarea.body-param__text").fill(JSON.stringify({ email: args.email, displayName: "Ada" }));
    });
    const userId = String(created.body?.user?.userId);
    const getUser = (block) => block.locator('tr[data-param-name="userId"] input').fill(userId);
    await authorize(page, args.token);
    const fetched = await tryItOut(page, "UserService_GetUser", "UserService", getUser);
    await fetched.block.locator(".live-responses-table").scrollIntoViewIfNeeded();
    await page.screenshot({ path: args.screenshot });
    await authorize(page, null);
    const anonymous = await tryItOut(page, "UserService_GetUser", "UserService", getUser);
    const answer = ({ status, body }) => ({ status, body });
    console.log(JSON.stringify({
      title, untrusted, offsite, sent, tls: { protocol: security?.protocol, issuer: security?.issuer },
      created: answer(created), fetched: answer(fetched), anonymous: answer(anonymous),
    }));
  } finally {
    await context.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
