/**
 * Protocol tests over a real socket against a real MariaDB: exact bytes in,
 * replies and stored rows out. The numbered cases come from public bug
 * reports against other SMTP servers.
 */

import assert from "node:assert/strict";
import { captureLog } from "./helpers/log_capture.ts";
import { RawClient, TRACE_HEADERS } from "./helpers/smtp_client.ts";
import {
  countMessages,
  openTransaction,
  type TestServer,
  withServer,
} from "./helpers/server.ts";
import { setLogLevel, setLogSink } from "../src/log.ts";

async function rawMessages(server: TestServer): Promise<string[]> {
  const rows = await server.database.query(
    "SELECT raw FROM messages ORDER BY id",
  ) as { raw: Uint8Array }[];
  return rows.map((row) => new TextDecoder("latin1").decode(row.raw));
}

/** The message as the client sent it, after the two trace headers. */
function withoutTraceHeaders(raw: string): string {
  const match = TRACE_HEADERS.exec(raw);
  assert.ok(match, "raw starts with Return-Path: and Received:");
  return raw.slice(match[0].length);
}

Deno.test("greeting names the host and has no enhanced code", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.connect(server.port);
    try {
      const greeting = await client.readReply();
      assert.equal(greeting.code, 220);
      assert.equal(greeting.lines[0], "220 mx.test.example ESMTP ready");
    } finally {
      client.close();
    }
  });
});

Deno.test("case 1: LF dot CRLF smuggling stores nothing", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      await openTransaction(client);
      await client.send(
        "Subject: outer\r\n\r\nfirst part\n.\r\nMAIL FROM:<x@example.com>\r\n" +
          "RCPT TO:<y@example.net>\r\nDATA\r\nspoofed\r\n.\r\nNOOP\r\n",
      );
      const [data, noop] = [await client.readReply(), await client.readReply()];
      assert.equal(data.code, 550);
      assert.equal(noop.code, 250);
      assert.equal(await countMessages(server), 0);
    } finally {
      client.close();
    }
  });
});

Deno.test("smuggling sequences never end the data", async (t) => {
  await withServer({}, async (server) => {
    const endings = [
      "\n.\n",
      "\r.\r",
      "\n.\r\n",
      "\r\n.\n",
      "\r.\r\n",
      "\r\n.\r",
      "\n.\r",
    ];
    for (const ending of endings) {
      await t.step(JSON.stringify(ending), async () => {
        const client = await RawClient.greeted(server.port);
        try {
          await openTransaction(client);
          await client.send(
            `Subject: s\r\n\r\nbefore${ending}MAIL FROM:<x@example.com>\r\n` +
              "RCPT TO:<y@example.net>\r\nDATA\r\nspoofed\r\n.\r\nNOOP\r\n",
          );
          assert.equal((await client.readReply()).code, 550);
          assert.equal((await client.readReply()).code, 250);
          assert.equal(await countMessages(server), 0);
        } finally {
          client.close();
        }
      });
    }
  });
});

Deno.test("case 2: lone CR in data gets 550", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      await openTransaction(client);
      await client.send("Subject: cr\r\n\r\nbefore\r.\rafter\r\n.\r\nNOOP\r\n");
      const data = await client.readReply();
      assert.equal(data.code, 550);
      assert.equal(data.enhancedStatusCode, "5.6.0");
      assert.equal((await client.readReply()).code, 250);
      assert.equal(await countMessages(server), 0);
    } finally {
      client.close();
    }
  });
});

Deno.test("case 3: over-long data line gets 500, envelope kept", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      await openTransaction(client);
      const line1000 = "a".repeat(998) + "\r\n";
      const line1001 = "b".repeat(999) + "\r\n";
      await client.send(line1000 + line1001 + ".\r\n");
      assert.equal((await client.readReply()).code, 500);
      assert.equal((await client.command("DATA")).code, 354);
      await client.send("Subject: long\r\n\r\n" + line1000 + ".\r\n");
      assert.equal((await client.readReply()).code, 250);
      const [raw] = await rawMessages(server);
      assert.equal(
        withoutTraceHeaders(raw!),
        "Subject: long\r\n\r\n" + line1000,
      );
    } finally {
      client.close();
    }
  });
});

Deno.test("case 4: data over SIZE gets 552 and the session goes on", async () => {
  const limit = 1024 * 1024;
  await withServer({ maxMessageBytes: limit }, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      const ehlo = await client.command("EHLO client.example");
      assert.ok(ehlo.lines.includes(`250-SIZE ${limit}`));
      assert.equal(
        (await client.command("MAIL FROM:<s@example.com>")).code,
        250,
      );
      assert.equal((await client.command("RCPT TO:<r@example.net>")).code, 250);
      assert.equal((await client.command("DATA")).code, 354);
      const line = "c".repeat(998) + "\r\n";
      const lines = Math.ceil((limit + 256 * 1024) / line.length);
      for (let sent = 0; sent < lines; sent += 100) {
        await client.send(line.repeat(Math.min(100, lines - sent)));
      }
      await client.send(".\r\n");
      const tooBig = await client.readReply();
      assert.equal(tooBig.code, 552);
      assert.equal(tooBig.enhancedStatusCode, "5.3.4");
      assert.equal((await client.command("NOOP")).code, 250);
      assert.equal((await client.command("DATA")).code, 354);
      await client.send("Subject: small\r\n\r\nsmall\r\n.\r\n");
      assert.equal((await client.readReply()).code, 250);
      assert.equal(await countMessages(server), 1);
    } finally {
      client.close();
    }
  });
});

Deno.test("case 5: declared SIZE over the limit gets 552", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      const limit = server.config.maxMessageBytes;
      await client.command("EHLO client.example");
      assert.equal(
        (await client.command(`MAIL FROM:<s@example.com> SIZE=${limit + 1}`))
          .code,
        552,
      );
      assert.equal(
        (await client.command(`MAIL FROM:<s@example.com> SIZE=${limit}`)).code,
        250,
      );
    } finally {
      client.close();
    }
  });
});

Deno.test("case 6: 101 pipelined recipients, 100 stored", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      await client.command("EHLO client.example");
      let commands = "MAIL FROM:<s@example.com>\r\n";
      for (let index = 1; index <= 101; index++) {
        commands += `RCPT TO:<r${index}@example.net>\r\n`;
      }
      await client.send(commands);
      assert.equal((await client.readReply()).code, 250);
      const codes = await client.readCodes(101);
      assert.deepEqual(codes.slice(0, 100), new Array(100).fill(250));
      assert.equal(codes[100], 452);
      assert.equal((await client.command("DATA")).code, 354);
      await client.send("Subject: many\r\n\r\nhello\r\n.\r\n");
      assert.equal((await client.readReply()).code, 250);
      const rows = await server.database.query(
        "SELECT COUNT(*) AS count, MIN(address) AS first FROM message_recipients",
      ) as { count: number; first: string }[];
      assert.equal(Number(rows[0]!.count), 100);
      assert.equal(rows[0]!.first, "r1@example.net");
    } finally {
      client.close();
    }
  });
});

Deno.test("case 8: null sender bounce is stored with empty sender", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      await client.command("EHLO client.example");
      assert.equal(
        (await client.command("MAIL FROM:<> BODY=8BITMIME")).code,
        250,
      );
      assert.equal((await client.command("RCPT TO:<>")).code, 501);
      assert.equal((await client.command("RCPT TO:<postmaster>")).code, 250);
      assert.equal((await client.command("DATA")).code, 354);
      await client.send("Subject: Undelivered Mail\r\n\r\nbounce\r\n.\r\n");
      assert.equal((await client.readReply()).code, 250);
      const rows = await server.database.query(
        "SELECT m.sender, r.address FROM messages m JOIN message_recipients r ON r.message_id = m.id",
      ) as { sender: string | null; address: string }[];
      assert.equal(rows.length, 1);
      assert.equal(rows[0]!.sender, "");
      assert.equal(rows[0]!.address, "postmaster");
      const [raw] = await rawMessages(server);
      assert.ok(raw!.startsWith("Return-Path: <>\r\n"));
    } finally {
      client.close();
    }
  });
});

Deno.test("case 10: empty message is stored", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      await openTransaction(client);
      await client.send(".\r\n");
      const stored = await client.readReply();
      assert.equal(stored.code, 250);
      assert.equal(stored.enhancedStatusCode, "2.0.0");
      const rows = await server.database.query(
        "SELECT subject, body, date FROM messages",
      ) as {
        subject: string;
        body: string;
        date: Date | null;
      }[];
      assert.equal(rows[0]!.subject, "");
      assert.equal(rows[0]!.body, "");
      assert.equal(rows[0]!.date, null);
    } finally {
      client.close();
    }
  });
});

Deno.test("case 11: messages without a header section are stored", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      await openTransaction(client);
      await client.send("  indented\r\nsecond\r\n.\r\n");
      assert.equal((await client.readReply()).code, 250);
      assert.equal(
        (await client.command("MAIL FROM:<s@example.com>")).code,
        250,
      );
      assert.equal((await client.command("RCPT TO:<r@example.net>")).code, 250);
      assert.equal((await client.command("DATA")).code, 354);
      await client.send("Subject: only headers\r\nX-Other: 1\r\n.\r\n");
      assert.equal((await client.readReply()).code, 250);
      const raws = (await rawMessages(server)).map(withoutTraceHeaders);
      assert.deepEqual(raws, [
        "  indented\r\nsecond\r\n",
        "Subject: only headers\r\nX-Other: 1\r\n",
      ]);
    } finally {
      client.close();
    }
  });
});

Deno.test("case 12: dot-unstuffing removes one leading dot", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      await openTransaction(client);
      await client.send("..key..value\r\n..\r\n.single\r\nend\r\n.\r\n");
      assert.equal((await client.readReply()).code, 250);
      const [raw] = await rawMessages(server);
      assert.equal(
        withoutTraceHeaders(raw!),
        ".key..value\r\n.\r\nsingle\r\nend\r\n",
      );
    } finally {
      client.close();
    }
  });
});

Deno.test("case 13: pipelined group with a bad address", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      await client.command("EHLO client.example");
      await client.send(
        "MAIL FROM:<s@example.com>\r\nRCPT TO:<r1@example.net>\r\n" +
          "RCPT TO:<bad address>\r\nRCPT TO:<r2@example.net>\r\nDATA\r\n",
      );
      assert.deepEqual(await client.readCodes(5), [250, 250, 501, 250, 354]);
      await client.send("Subject: piped\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\n");
      assert.deepEqual(await client.readCodes(3), [250, 250, 250]);
      await client.send("NO");
      await new Promise((resolve) => setTimeout(resolve, 50));
      await client.send("OP\r\n");
      assert.equal((await client.readReply()).code, 250);
      const rows = await server.database.query(
        "SELECT address FROM message_recipients ORDER BY address",
      ) as { address: string }[];
      assert.deepEqual(rows.map((row) => row.address), [
        "r1@example.net",
        "r2@example.net",
      ]);
    } finally {
      client.close();
    }
  });
});

Deno.test("duplicate recipient is stored once", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      await client.command("EHLO client.example");
      await client.command("MAIL FROM:<s@example.com>");
      assert.equal((await client.command("RCPT TO:<r@example.net>")).code, 250);
      assert.equal((await client.command("RCPT TO:<r@example.net>")).code, 250);
      assert.equal((await client.command("DATA")).code, 354);
      await client.send("Subject: dup\r\n\r\nx\r\n.\r\n");
      assert.equal((await client.readReply()).code, 250);
      const rows = await server.database.query(
        "SELECT address FROM message_recipients",
      ) as unknown[];
      assert.equal(rows.length, 1);
    } finally {
      client.close();
    }
  });
});

Deno.test("over-long command line gets 500 and the session goes on", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      await client.send("NOOP " + "x".repeat(600) + "\r\nNOOP\r\n");
      assert.deepEqual(await client.readCodes(2), [500, 250]);
      await client.send(
        "EHLO client.example\r\nMAIL FROM:<a@b.example>\nRCPT TO:<c@d.example>\r\nNOOP\r\n",
      );
      assert.deepEqual(await client.readCodes(3), [250, 500, 250]);
    } finally {
      client.close();
    }
  });
});

Deno.test("2 MB command line without CRLF keeps memory bounded", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      const before = Deno.memoryUsage().rss;
      const chunk = "A".repeat(64 * 1024);
      for (let sent = 0; sent < 2 * 1024 * 1024; sent += chunk.length) {
        await client.send(chunk);
      }
      await client.send("\r\nNOOP\r\n");
      assert.deepEqual(await client.readCodes(2), [500, 250]);
      const grown = Deno.memoryUsage().rss - before;
      assert.ok(grown < 32 * 1024 * 1024, `RSS grew by ${grown} bytes`);
    } finally {
      client.close();
    }
  });
});

Deno.test("idle session gets 421 and is closed", async () => {
  await withServer({ idleTimeoutMs: 500 }, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      const started = Date.now();
      const reply = await client.readReply(5000);
      assert.equal(reply.code, 421);
      assert.ok(Date.now() - started >= 400);
      assert.equal(await client.closedByServer(), true);
    } finally {
      client.close();
    }
  });
});

Deno.test("trickling bytes do not extend the idle timeout", async () => {
  await withServer({ idleTimeoutMs: 800 }, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      const started = Date.now();
      let closed = false;
      for (let index = 0; index < 40 && !closed; index++) {
        try {
          await client.send("N");
        } catch {
          closed = true;
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const reply = await client.readReply(3000);
      assert.equal(reply.code, 421);
      assert.ok(
        Date.now() - started < 3000,
        "closed well before 40 bytes were sent",
      );
    } finally {
      client.close();
    }
  });
});

Deno.test("connection over MAX_CONNECTIONS gets 421", async () => {
  await withServer({ maxConnections: 2 }, async (server) => {
    const first = await RawClient.greeted(server.port);
    const second = await RawClient.greeted(server.port);
    const third = await RawClient.connect(server.port);
    try {
      const rejected = await third.readReply();
      assert.equal(rejected.code, 421);
      assert.equal(await third.closedByServer(), true);
      assert.equal((await first.command("NOOP")).code, 250);
      assert.equal((await second.command("NOOP")).code, 250);
    } finally {
      first.close();
      second.close();
      third.close();
    }
  });
});

Deno.test("enhanced status codes appear only after EHLO", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      assert.equal(
        (await client.command("NOOP")).enhancedStatusCode,
        undefined,
      );
      await client.command("HELO client.example");
      assert.equal(
        (await client.command("NOOP")).enhancedStatusCode,
        undefined,
      );
    } finally {
      client.close();
    }
    const extended = await RawClient.greeted(server.port);
    try {
      await extended.command("EHLO client.example");
      assert.equal(
        (await extended.command("NOOP")).enhancedStatusCode,
        "2.0.0",
      );
      const help = await extended.command("HELP");
      assert.equal(help.code, 214);
      assert.ok(help.lines.every((line) => /^214[ -]2\.0\.0 /.test(line)));
    } finally {
      extended.close();
    }
  });
});

Deno.test("QUIT gets 221 and the server closes", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      assert.equal((await client.command("QUIT")).code, 221);
      assert.equal(await client.closedByServer(), true);
    } finally {
      client.close();
    }
  });
});

Deno.test("client gone mid-DATA leaves nothing stored", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    await openTransaction(client);
    await client.send("Subject: half\r\n\r\nhalf a message\r\n");
    client.close();
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(await countMessages(server), 0);
    assert.equal(server.server.connectionCount, 0);
  });
});

Deno.test("session_end names why each session ended", async () => {
  const lines: string[] = [];
  const previousSink = setLogSink((line) => lines.push(line));
  try {
    await withServer(
      { idleTimeoutMs: 300, logLevel: "info" },
      async (server) => {
        const quitter = await RawClient.greeted(server.port);
        await quitter.command("QUIT");
        assert.equal(await quitter.closedByServer(), true);
        quitter.close();

        const leaver = await RawClient.greeted(server.port);
        await leaver.command("EHLO client.example");
        const oversized = await leaver.command(
          "MAIL FROM:<s@example.com> SIZE=999999999",
        );
        assert.equal(oversized.code, 552);
        leaver.close();

        const idler = await RawClient.greeted(server.port);
        assert.equal((await idler.readReply()).code, 421);
        assert.equal(await idler.closedByServer(), true);
        idler.close();

        while (server.server.connectionCount > 0) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      },
    );
  } finally {
    setLogSink(previousSink);
    setLogLevel("error");
  }

  const reasons = lines
    .filter((line) => line.includes(" event=session_end "))
    .map((line) => /reason=(\S+)/.exec(line)?.[1])
    .sort();
  assert.deepEqual(reasons, ["client_closed", "idle_timeout", "quit"]);
  const sizeLimit = lines.filter((line) => line.includes("event=size_limit"));
  assert.equal(sizeLimit.length, 1);
  assert.match(sizeLimit[0]!, / declared=999999999 /);
});

Deno.test("message over the shared budget gets 421, retry stores", async () => {
  const limit = 64 * 1024;
  await withServer(
    { maxMessageBytes: limit, maxBufferedMessageBytes: limit },
    async (server) => {
      const first = await RawClient.greeted(server.port);
      const second = await RawClient.greeted(server.port);
      let retry: RawClient | undefined;
      try {
        const line = "b".repeat(998) + "\r\n";
        const message = (subject: string) =>
          `Subject: ${subject}\r\n\r\n${line.repeat(40)}.\r\n`;
        await openTransaction(first, "first@example.net");
        await first.send("Subject: first\r\n\r\n" + line.repeat(40));
        while (server.server.bufferedMessageBytes === 0) {
          await new Promise((resolve) => setTimeout(resolve, 10));
        }

        await openTransaction(second, "second@example.net");
        await second.send(message("second"));
        const refused = await second.readReply();
        assert.equal(refused.code, 421);
        assert.equal(refused.enhancedStatusCode, "4.3.1");
        assert.equal(await second.closedByServer(), true);

        await first.send(".\r\n");
        assert.equal((await first.readReply()).code, 250);
        assert.equal(server.server.bufferedMessageBytes, 0);

        retry = await RawClient.greeted(server.port);
        await openTransaction(retry, "second@example.net");
        await retry.send(message("second"));
        assert.equal((await retry.readReply()).code, 250);
        const rows = await server.database.query(
          "SELECT r.address FROM messages m " +
            "JOIN message_recipients r ON r.message_id = m.id ORDER BY m.id",
        ) as { address: string }[];
        assert.deepEqual(rows.map((row) => row.address), [
          "first@example.net",
          "second@example.net",
        ]);
      } finally {
        first.close();
        second.close();
        retry?.close();
      }
    },
  );
});

Deno.test("mail data must finish within the idle timeout", async () => {
  await withServer({ idleTimeoutMs: 800 }, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      await openTransaction(client);
      const started = Date.now();
      // Whole short lines, each well within the timeout, do not extend it.
      const sending = (async () => {
        for (let index = 0; index < 40; index++) {
          try {
            await client.send("line\r\n");
          } catch {
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, 150));
        }
      })();
      const reply = await client.readReply(6000);
      await sending;
      assert.equal(reply.code, 421);
      assert.equal(reply.enhancedStatusCode, "4.4.2");
      assert.ok(Date.now() - started < 4000, "closed before 40 lines");
      assert.equal(await countMessages(server), 0);
    } finally {
      client.close();
    }
  });
});

Deno.test("part of a next line does not hold back replies", async () => {
  await withServer({}, async (server) => {
    const client = await RawClient.greeted(server.port);
    try {
      await client.send("NOOP\r\nNO");
      assert.equal((await client.readReply(2000)).code, 250);
      await client.send("OP\r\n");
      assert.equal((await client.readReply(2000)).code, 250);

      await openTransaction(client);
      await client.send("Subject: stray\r\n\r\nx\r\n.\r\n\n");
      const stored = await client.readReply(2000);
      assert.equal(stored.code, 250);
      assert.equal(await countMessages(server), 1);
    } finally {
      client.close();
    }
  });
});

Deno.test("connections reset before accept are no errors", async () => {
  await captureLog(async (lines) => {
    await withServer({}, async (server) => {
      // Deno cannot set SO_LINGER, which makes close() send a reset.
      const script = "import socket, struct, sys\n" +
        "for _ in range(300):\n" +
        "    s = socket.socket()\n" +
        "    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,\n" +
        "                 struct.pack('ii', 1, 0))\n" +
        "    s.connect(('127.0.0.1', int(sys.argv[1])))\n" +
        "    s.close()\n";
      const resets = await new Deno.Command("python3", {
        args: ["-c", script, String(server.port)],
      }).output();
      assert.equal(resets.code, 0, new TextDecoder().decode(resets.stderr));

      const client = await RawClient.greeted(server.port);
      try {
        assert.equal((await client.command("NOOP")).code, 250);
      } finally {
        client.close();
      }
    });
    const failures = lines.filter((line) => line.includes("accept_failed"));
    assert.deepEqual(failures, []);
  });
});

Deno.test("shutdown while writing a reply still sends 421", async () => {
  await withServer({}, async (server) => {
    // About 9 MB of EXPN reply: more than loopback socket buffers hold, so
    // the server is still writing when the shutdown starts.
    await server.database.query(
      "INSERT INTO mail_groups (name) VALUES ('big')",
    );
    await server.database.query(
      "INSERT INTO group_members (group_id, address) " +
        "SELECT id, CONCAT('member', seq, '@example.com') " +
        "FROM mail_groups, seq_1_to_300000",
    );
    const client = await RawClient.greeted(server.port);
    try {
      await client.send("EXPN big\r\n");
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const shutdown = server.server.shutdown(20_000);
      const started = Date.now();

      const members = await client.readReply(20_000);
      assert.equal(members.code, 250);
      assert.equal(members.lines.length, 300_000);
      assert.equal((await client.readReply()).code, 421);
      await shutdown;
      assert.ok(Date.now() - started < 15_000, "closed before the grace");
    } finally {
      client.close();
    }
  });
});
