// Browser test of `oidc-bff demo`: headless Chromium signs in on the demo
// page, calls the API through the gateway and checks the result.
//
//   node demo.test.mjs http://127.0.0.1:8080/ [https://127.0.0.1:8443/ ...]
//
// Each URL is tested in turn. An https URL is a demo started with `--tls`
// (a self-signed certificate, accepted with --ignore-certificate-errors):
// there the page and the API call must also travel over HTTP/2.
//
// Environment: CHROMIUM (default /usr/bin/chromium), SCREENSHOT (default: a
// temporary file). Run through ./run.sh to build and start the demo first.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const urls = process.argv.length > 2 ? process.argv.slice(2) : [process.env.DEMO_URL].filter(Boolean);
if (urls.length === 0) {
  console.error("usage: node demo.test.mjs <demo URL>...");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const TIMEOUT = 30_000;

const problems = [];
for (const url of urls) {
  await run(url);
}

if (problems.length > 0) {
  console.error(`FAILED:\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log(`ok: signed in, called the API and saw the result (${urls.join(", ")})`);

async function run(url) {
  const tls = url.startsWith("https:");
  const suffix = tls ? "-tls" : "";
  const screenshot = process.env.SCREENSHOT
    ? process.env.SCREENSHOT.replace(/(\.png)?$/, `${suffix}.png`)
    : join(tmpdir(), `oidc-bff-demo-${process.pid}${suffix}.png`);
  const userDataDir = mkdtempSync(join(tmpdir(), "oidc-bff-chromium-"));
  step(`${url}`);
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      viewport: { width: 1100, height: 1000 },
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // The demo's self-signed certificate.
        ...(tls ? ["--ignore-certificate-errors"] : []),
      ],
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(TIMEOUT);
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    page.on("console", (msg) => {
      // The anonymous /bff/user probe answers 401 by design.
      if (msg.type() === "error" && !/status of 401/.test(msg.text())) {
        problems.push(`console error: ${msg.text()} (${msg.location().url})`);
      }
    });

    step("open the demo page");
    await page.goto(url);
    await page.locator("#login").waitFor({ state: "visible" });

    step("sign in");
    await page.locator("#login").click();
    await page.locator("#signed-in").waitFor({ state: "visible" });
    await expectText(page.locator("#user-name"), /Alice Example/);
    await expectText(page.locator("#claims"), /alice@example\.com/);
    await expectText(page.locator("#token-expires"), /\d+ s/);

    step("call the API");
    await page.locator("#call-api").click();
    await expectText(page.locator("#api-status"), /^200 /);
    await expectText(page.locator("#api-result"), /Hello alice, this is the sample API\./);
    await expectText(page.locator("#api-result"), /"receivedCookies": false/);

    if (tls) {
      step("HTTP/2 over the gateway's TLS");
      const protocols = await page.evaluate(() => ({
        page: performance.getEntriesByType("navigation")[0]?.nextHopProtocol,
        api: performance
          .getEntriesByType("resource")
          .filter((e) => new URL(e.name).pathname.startsWith("/api/"))
          .map((e) => e.nextHopProtocol),
      }));
      if (protocols.page !== "h2" || protocols.api.length === 0 || protocols.api.some((p) => p !== "h2")) {
        throw new Error(`expected h2 for the page and the API calls, got ${JSON.stringify(protocols)}`);
      }
    }

    step(`screenshot: ${screenshot}`);
    await page.screenshot({ path: screenshot, fullPage: true });

    step("sign out");
    await page.locator("#logout").click();
    await page.locator("#signed-out").waitFor({ state: "visible" });
  } catch (err) {
    problems.push(`${url}: ${err.message}`);
  } finally {
    await context?.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

function step(what) {
  console.log(`- ${what}`);
}

async function expectText(locator, pattern) {
  const deadline = Date.now() + TIMEOUT;
  let text = "";
  while (Date.now() < deadline) {
    text = (await locator.textContent()) ?? "";
    if (pattern.test(text)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`expected ${pattern} in ${await locator.evaluate((el) => "#" + el.id)}, got: ${text.slice(0, 300)}`);
}
