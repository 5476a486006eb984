import assert from "node:assert/strict";
import { parseMysqlUrl } from "../src/mysql_url.ts";

Deno.test("parseMysqlUrl percent-decodes every part", () => {
  const target = parseMysqlUrl(
    "mysql://us%40er:p%3Ass%2Fw%25rd@[::1]:3307/db%24x",
  );
  assert.equal(target.user, "us@er");
  assert.equal(target.password, "p:ss/w%rd");
  assert.equal(target.host, "::1");
  assert.equal(target.port, 3307);
  assert.equal(target.database, "db$x");
  assert.equal(parseMysqlUrl("mysql://root@localhost/smtpstore").port, 3306);
});

Deno.test("parseMysqlUrl errors hide the password", async (t) => {
  const cases = [
    "http://user:secret@127.0.0.1/db",
    "mysql://user:secret@127.0.0.1/",
    "mysql://user:secret@127.0.0.1/db?ssl=true",
    "mysql://user:secret@127.0.0.1/db%ZZ",
  ];
  for (const url of cases) {
    await t.step(url, () => {
      assert.throws(() => parseMysqlUrl(url), (error: Error) => {
        assert.match(error.message, /^invalid MySQL URL/);
        assert.ok(!error.message.includes("secret"), error.message);
        return true;
      });
    });
  }
});
