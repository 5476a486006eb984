import assert from "node:assert/strict";
import { ConfigError, DEFAULT_MYSQL_URL, loadConfig } from "../src/config.ts";

Deno.test("loadConfig defaults", () => {
  const config = loadConfig({ SMTP_HOSTNAME: "mx.example" });
  assert.equal(config.smtpHost, "0.0.0.0");
  assert.equal(config.smtpPort, 2525);
  assert.equal(config.hostname, "mx.example");
  assert.equal(config.mysqlUrl, DEFAULT_MYSQL_URL);
  assert.equal(config.maxMessageBytes, 10 * 1024 * 1024);
  assert.equal(config.maxBufferedMessageBytes, 256 * 1024 * 1024);
  assert.equal(config.maxRecipients, 100);
  assert.equal(config.maxConnections, 1000);
  assert.equal(config.idleTimeoutMs, 600_000);
  assert.equal(config.shutdownGraceMs, 30_000);
  assert.equal(config.logLevel, "info");
  assert.equal(config.tlsCertFile, undefined);
});

Deno.test("loadConfig reads every variable", () => {
  const config = loadConfig({
    SMTP_HOST: "127.0.0.1",
    SMTP_PORT: "2600",
    SMTP_HOSTNAME: "mx.example",
    MYSQL_URL: "mysql://u:p@db.example:3307/mail",
    MAX_MESSAGE_BYTES: "1000",
    MAX_RECIPIENTS: "5",
    MAX_CONNECTIONS: "7",
    IDLE_TIMEOUT_SECONDS: "9",
    SHUTDOWN_GRACE_SECONDS: "0",
    LOG_LEVEL: "DEBUG",
  });
  assert.equal(config.smtpHost, "127.0.0.1");
  assert.equal(loadConfig({ SMTP_HOST: "::1" }).smtpHost, "::1");
  assert.equal(loadConfig({ SMTP_HOST: "localhost" }).smtpHost, "localhost");
  assert.equal(config.smtpPort, 2600);
  assert.equal(config.mysqlUrl, "mysql://u:p@db.example:3307/mail");
  assert.equal(config.maxMessageBytes, 1000);
  assert.equal(config.maxRecipients, 5);
  assert.equal(config.maxConnections, 7);
  assert.equal(config.idleTimeoutMs, 9000);
  assert.equal(config.shutdownGraceMs, 0);
  assert.equal(config.logLevel, "debug");
});

/** [variables, text the one-line error must contain]. */
const INVALID_CASES: [Record<string, string>, string][] = [
  [{ SMTP_PORT: "abc" }, 'SMTP_PORT="abc" is invalid'],
  [{ SMTP_HOST: "not..valid" }, 'SMTP_HOST="not..valid" is invalid'],
  [{ SMTP_HOST: "999.1.1.1" }, 'SMTP_HOST="999.1.1.1" is invalid'],
  [{ SMTP_HOST: "host name" }, "SMTP_HOST"],
  [{ SMTP_PORT: "70000" }, "from 0 to 65535"],
  [{ MAX_MESSAGE_BYTES: "-1" }, 'MAX_MESSAGE_BYTES="-1" is invalid'],
  [{ MAX_MESSAGE_BYTES: "0" }, "from 1 to"],
  [{ MAX_RECIPIENTS: "1.5" }, 'MAX_RECIPIENTS="1.5" is invalid'],
  [{ IDLE_TIMEOUT_SECONDS: "ten" }, "IDLE_TIMEOUT_SECONDS"],
  [{ LOG_LEVEL: "loud" }, 'LOG_LEVEL="loud" is invalid'],
  [{ SMTP_HOSTNAME: "two words" }, "SMTP_HOSTNAME"],
  [{ MYSQL_URL: "nonsense" }, 'MYSQL_URL="nonsense" is invalid'],
  [{ MYSQL_URL: "mysql://root@127.0.0.1/bad-name" }, "database name"],
  [{ MYSQL_URL: "mysql://root@127.0.0.1/db?ssl=true" }, "query parameters"],
  [{ TLS_CERT_FILE: "cert.pem" }, "TLS_KEY_FILE is missing"],
  [
    { MAX_MESSAGE_BYTES: "2000", MAX_BUFFERED_MESSAGE_BYTES: "1999" },
    "MAX_BUFFERED_MESSAGE_BYTES=1999 is invalid: expected at least",
  ],
];

Deno.test("loadConfig rejects invalid values", async (t) => {
  for (const [variables, expected] of INVALID_CASES) {
    await t.step(JSON.stringify(variables), () => {
      assert.throws(
        () => loadConfig({ SMTP_HOSTNAME: "mx.example", ...variables }),
        (error: Error) => {
          assert.ok(error instanceof ConfigError);
          assert.ok(error.message.includes(expected), error.message);
          assert.ok(!error.message.includes("\n"), "one line");
          return true;
        },
      );
    });
  }
});

Deno.test("loadConfig hides the MySQL password", async (t) => {
  const urls = [
    "mysql://root:s3cret@127.0.0.1:3306",
    "mysql://root:s3cret@127.0.0.1:notaport/x",
    "mysql://root:s3cret@127.0.0.1/x?ssl=1",
    "mysql://root:s3c/ret@127.0.0.1:3306/x",
    "mysql:/root:s3cret@127.0.0.1/x",
    "mysql//root:s3cret@127.0.0.1/x",
    "mysql://root:s3cr@t@127.0.0.1/x?ssl=1",
  ];
  for (const url of urls) {
    await t.step(url, () => {
      assert.throws(() => loadConfig({ MYSQL_URL: url }), (error: Error) => {
        assert.ok(error.message.startsWith("MYSQL_URL="), error.message);
        assert.ok(!error.message.includes("s3c"), error.message);
        return true;
      });
    });
  }
});
