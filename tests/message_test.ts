import assert from "node:assert/strict";
import {
  buildTraceHeaders,
  extractFields,
  type TraceContext,
} from "../src/message.ts";
import { setLogSink } from "../src/log.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Joins header and body lines with CRLF, ending the last line too. */
function message(lines: readonly string[]): Uint8Array {
  return encoder.encode(lines.map((line) => `${line}\r\n`).join(""));
}

/** Encodes each character as one byte, for raw ISO-8859-1 text. */
function latin1Bytes(text: string): Uint8Array {
  return Uint8Array.from(text, (char) => char.charCodeAt(0));
}

/** Encodes bytes as base64. */
function base64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

// ---------------------------------------------------------------------------
// Subject

const SUBJECT_CASES: readonly {
  name: string;
  header: string;
  expected: string;
}[] = [
  {
    name: "plain ASCII",
    header: "Subject: Quarterly report",
    expected: "Quarterly report",
  },
  {
    name: "RFC 2047 B in UTF-8",
    header: "Subject: =?UTF-8?B?SGVsbG8gV8O2cmxk?=",
    expected: "Hello Wörld",
  },
  {
    name: "RFC 2047 Q in UTF-8",
    header: "Subject: =?utf-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=",
    expected: "Grüße aus Köln",
  },
  {
    name: "RFC 2047 Q in ISO-8859-1",
    header: "Subject: =?ISO-8859-1?Q?Caf=E9_cr=E8me?=",
    expected: "Café crème",
  },
  {
    name: "RFC 2047 B in ISO-8859-1",
    header: `Subject: =?iso-8859-1?B?${base64(latin1Bytes("Über"))}?=`,
    expected: "Über",
  },
  {
    name: "space between encoded words dropped",
    header: "Subject: =?UTF-8?Q?one?= =?UTF-8?Q?_two?= three",
    expected: "one two three",
  },
  {
    name: "folded with whitespace kept",
    header: "Subject: Hello\r\n   World\r\n\tagain",
    expected: "Hello   World\tagain",
  },
  {
    name: "folded encoded words",
    header: "Subject: =?UTF-8?Q?Gr=C3=BC?=\r\n =?UTF-8?Q?=C3=9Fe?=",
    expected: "Grüße",
  },
];

Deno.test("extractFields decodes Subject", async (t) => {
  for (const testCase of SUBJECT_CASES) {
    await t.step(testCase.name, async () => {
      const fields = await extractFields(
        message([testCase.header, "", "body"]),
      );
      assert.equal(fields.subject, testCase.expected);
    });
  }
});

Deno.test("extractFields reads raw ISO-8859-1 Subject", async () => {
  const data = latin1Bytes("Subject: Caf\xe9 cr\xe8me\r\n\r\nbody\r\n");

  const fields = await extractFields(data);

  assert.equal(fields.subject, "Café crème");
});

Deno.test("extractFields returns empty Subject when missing", async () => {
  const fields = await extractFields(message(["From: a@example.com", "", "x"]));

  assert.equal(fields.subject, "");
});

// ---------------------------------------------------------------------------
// Date

const DATE_CASES: readonly {
  name: string;
  value: string;
  expected: string | null;
}[] = [
  {
    name: "+0200",
    value: "Mon, 1 Jan 2024 10:00:00 +0200",
    expected: "2024-01-01T08:00:00.000Z",
  },
  {
    name: "-0500",
    value: "Fri, 21 Nov 1997 09:55:06 -0500",
    expected: "1997-11-21T14:55:06.000Z",
  },
  {
    name: "GMT",
    value: "Mon, 01 Jan 2024 10:00:00 GMT",
    expected: "2024-01-01T10:00:00.000Z",
  },
  {
    name: "UT",
    value: "Mon, 01 Jan 2024 10:00:00 UT",
    expected: "2024-01-01T10:00:00.000Z",
  },
  {
    name: "no zone as UTC",
    value: "Mon, 1 Jan 2024 10:00:00",
    expected: "2024-01-01T10:00:00.000Z",
  },
  {
    name: "-0000",
    value: "Mon, 1 Jan 2024 10:00:00 -0000",
    expected: "2024-01-01T10:00:00.000Z",
  },
  {
    name: "EST",
    value: "Mon, 1 Jan 2024 10:00:00 EST",
    expected: "2024-01-01T15:00:00.000Z",
  },
  {
    name: "PDT",
    value: "Mon, 1 Jul 2024 10:00:00 PDT",
    expected: "2024-07-01T17:00:00.000Z",
  },
  {
    name: "military letter as -0000",
    value: "Mon, 1 Jan 2024 10:00:00 Q",
    expected: "2024-01-01T10:00:00.000Z",
  },
  {
    name: "two-digit year below 50",
    value: "Mon, 1 Jan 24 10:00:00 +0000",
    expected: "2024-01-01T10:00:00.000Z",
  },
  {
    name: "two-digit year from 50",
    value: "Fri, 21 Nov 97 09:55:06 GMT",
    expected: "1997-11-21T09:55:06.000Z",
  },
  {
    name: "three-digit year",
    value: "1 Jan 124 10:00:00 +0000",
    expected: "2024-01-01T10:00:00.000Z",
  },
  {
    name: "no day-of-week",
    value: "1 Jan 2024 10:00:00 +0100",
    expected: "2024-01-01T09:00:00.000Z",
  },
  {
    name: "no seconds",
    value: "Mon, 1 Jan 2024 10:00 +0000",
    expected: "2024-01-01T10:00:00.000Z",
  },
  {
    name: "trailing comment",
    value: "Tue, 1 Jul 2003 10:52:37 +0200 (CEST)",
    expected: "2003-07-01T08:52:37.000Z",
  },
  {
    name: "folded",
    value: "Tue, 1 Jul 2003\r\n 10:52:37 +0200",
    expected: "2003-07-01T08:52:37.000Z",
  },
  {
    name: "lower-case names",
    value: "mon, 1 jan 2024 10:00:00 gmt",
    expected: "2024-01-01T10:00:00.000Z",
  },
  {
    name: "offset across a day",
    value: "Mon, 1 Jan 2024 01:00:00 +0530",
    expected: "2023-12-31T19:30:00.000Z",
  },
  { name: "garbage", value: "not a date", expected: null },
  { name: "empty", value: "", expected: null },
  {
    name: "30 February",
    value: "Thu, 30 Feb 2023 10:00:00 +0000",
    expected: null,
  },
  { name: "hour 25", value: "1 Jan 2024 25:00:00 +0000", expected: null },
  {
    name: "zone minutes 60",
    value: "1 Jan 2024 10:00:00 +0260",
    expected: null,
  },
  { name: "unknown month", value: "1 Foo 2024 10:00:00 +0000", expected: null },
  {
    name: "unknown day-of-week",
    value: "Xyz, 1 Jan 2024 10:00:00 +0000",
    expected: null,
  },
  { name: "year 1899", value: "1 Jan 1899 10:00:00 +0000", expected: null },
  {
    name: "open comment",
    value: "1 Jan 2024 10:00:00 +0000 (CET",
    expected: null,
  },
  {
    name: "text after zone",
    value: "1 Jan 2024 10:00:00 +0000 extra",
    expected: null,
  },
];

Deno.test("extractFields parses Date", async (t) => {
  for (const testCase of DATE_CASES) {
    await t.step(testCase.name, async () => {
      const data = message([`Date: ${testCase.value}`, "", "body"]);

      const { date } = await extractFields(data);

      if (testCase.expected === null) {
        assert.equal(date, null);
      } else {
        assert.ok(date instanceof Date);
        assert.equal(date.toISOString(), testCase.expected);
      }
    });
  }
});

Deno.test("extractFields returns null Date when missing", async () => {
  const fields = await extractFields(message(["Subject: x", "", "body"]));

  assert.equal(fields.date, null);
});

Deno.test("extractFields takes first of two Date fields", async () => {
  const data = message([
    "Date: Mon, 1 Jan 2024 10:00:00 +0000",
    "Date: Tue, 2 Jan 2024 10:00:00 +0000",
    "",
    "body",
  ]);

  const { date } = await extractFields(data);

  assert.equal(date?.toISOString(), "2024-01-01T10:00:00.000Z");
});

// ---------------------------------------------------------------------------
// Body

const BODY_CASES: readonly {
  name: string;
  lines: readonly string[];
  expected: string;
}[] = [
  {
    name: "no Content-Type with CRLF as LF",
    lines: ["Subject: x", "", "line one", "line two"],
    expected: "line one\nline two\n",
  },
  {
    name: "multipart/alternative text part chosen",
    lines: [
      "MIME-Version: 1.0",
      'Content-Type: multipart/alternative; boundary="alt"',
      "",
      "--alt",
      "Content-Type: text/plain; charset=utf-8",
      "",
      "Plain version",
      "--alt",
      "Content-Type: text/html; charset=utf-8",
      "",
      "<p>HTML version</p>",
      "--alt--",
    ],
    expected: "Plain version",
  },
  {
    name: "multipart/alternative with html first",
    lines: [
      'Content-Type: multipart/alternative; boundary="alt"',
      "",
      "--alt",
      "Content-Type: text/html",
      "",
      "<p>HTML version</p>",
      "--alt",
      "Content-Type: text/plain",
      "",
      "Plain version",
      "--alt--",
    ],
    expected: "Plain version",
  },
  {
    name: "text part inside multipart/mixed",
    lines: [
      'Content-Type: multipart/mixed; boundary="mix"',
      "",
      "--mix",
      "Content-Type: text/plain",
      "",
      "See the attachment.",
      "--mix",
      "Content-Type: application/pdf",
      "Content-Disposition: attachment; filename=a.pdf",
      "Content-Transfer-Encoding: base64",
      "",
      "JVBERi0xLjQK",
      "--mix--",
    ],
    expected: "See the attachment.",
  },
  {
    name: "html only as text",
    lines: [
      "Content-Type: text/html; charset=utf-8",
      "",
      "<!DOCTYPE html>",
      "<html><head><title>Title</title>",
      "<style>p { color: red; }</style></head>",
      "<body><!-- a comment -->",
      "<p>Hello &amp; welcome,",
      "   reader</p><div>First&nbsp;line<br>Second line</div>",
      "<ul><li>one</li><li>two</li></ul>",
      "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>",
      "<script>document.write('hidden');</script>",
      "<p>caf&eacute; &#233; &#x41; &#150; &lt;tag&gt; &unknown;</p>",
      "</body></html>",
    ],
    expected: [
      "Hello & welcome, reader",
      "First\u00a0line",
      "Second line",
      "one",
      "two",
      "a b",
      "c",
      "café é A \u2013 <tag> &unknown;",
    ].join("\n"),
  },
  {
    name: "html pre keeps whitespace",
    lines: [
      "Content-Type: text/html",
      "",
      "<p>Code:</p><pre>  indented",
      "    more</pre><p>after</p>",
    ],
    expected: "Code:\n  indented\n    more\nafter",
  },
  {
    name: "quoted-printable ISO-8859-1",
    lines: [
      "Content-Type: text/plain; charset=iso-8859-1",
      "Content-Transfer-Encoding: quoted-printable",
      "",
      "Caf=E9 cr=E8me=",
      "br=FBl=E9e",
    ],
    expected: "Café crèmebrûlée\n",
  },
  {
    name: "quoted-printable UTF-8",
    lines: [
      "Content-Type: text/plain; charset=UTF-8",
      "Content-Transfer-Encoding: quoted-printable",
      "",
      "Gr=C3=BC=C3=9Fe",
      "=C3=9Cber",
    ],
    expected: "Grüße\nÜber\n",
  },
  {
    name: "quoted-printable bare CR as LF",
    lines: [
      "Content-Type: text/plain",
      "Content-Transfer-Encoding: quoted-printable",
      "",
      "a=0Db=0D=0Ac",
    ],
    expected: "a\nb\nc\n",
  },
  {
    name: "base64 ISO-8859-1",
    lines: [
      "Content-Type: text/plain; charset=ISO-8859-1",
      "Content-Transfer-Encoding: base64",
      "",
      base64(latin1Bytes("Caf\xe9\r\n\xdcber\r\n")),
    ],
    expected: "Café\nÜber\n",
  },
  {
    name: "base64 UTF-8",
    lines: [
      "Content-Type: text/plain; charset=utf-8",
      "Content-Transfer-Encoding: base64",
      "",
      base64(encoder.encode("Grüße\r\nÜber\r\n")),
    ],
    expected: "Grüße\nÜber\n",
  },
  {
    name: "8bit UTF-8",
    lines: [
      "Content-Type: text/plain; charset=utf-8",
      "Content-Transfer-Encoding: 8bit",
      "",
      "naïve café",
    ],
    expected: "naïve café\n",
  },
  {
    name: "attachment only as empty",
    lines: [
      "Content-Type: application/octet-stream",
      "Content-Transfer-Encoding: base64",
      "",
      "AAECAw==",
    ],
    expected: "",
  },
];

Deno.test("extractFields extracts body", async (t) => {
  for (const testCase of BODY_CASES) {
    await t.step(testCase.name, async () => {
      const { body } = await extractFields(message(testCase.lines));
      assert.equal(body, testCase.expected);
    });
  }
});

// ---------------------------------------------------------------------------
// Malformed messages

const MALFORMED_CASES: readonly {
  name: string;
  data: Uint8Array;
  expected: { subject: string; date: string | null; body: string };
}[] = [
  {
    name: "empty message",
    data: new Uint8Array(0),
    expected: { subject: "", date: null, body: "" },
  },
  {
    name: "no header section",
    data: message([" leading space", "Subject: not a header", "", "body"]),
    expected: {
      subject: "",
      date: null,
      body: " leading space\nSubject: not a header\n\nbody\n",
    },
  },
  {
    name: "first line not a header field",
    data: message(["Hello there", "Subject: not a header"]),
    expected: {
      subject: "",
      date: null,
      body: "Hello there\nSubject: not a header\n",
    },
  },
  {
    name: "headers only with CRLF",
    data: message(["Subject: only", "Date: Mon, 1 Jan 2024 10:00:00 +0000"]),
    expected: {
      subject: "only",
      date: "2024-01-01T10:00:00.000Z",
      body: "",
    },
  },
  {
    name: "headers only without CRLF",
    data: encoder.encode(
      "Subject: only\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000",
    ),
    expected: {
      subject: "only",
      date: "2024-01-01T10:00:00.000Z",
      body: "",
    },
  },
  {
    name: "multipart without boundary parameter",
    data: message([
      "Subject: no boundary",
      "Content-Type: multipart/mixed",
      "",
      "--x",
      "Content-Type: text/plain",
      "",
      "hello",
      "--x--",
    ]),
    expected: {
      subject: "no boundary",
      date: null,
      body: "--x\nContent-Type: text/plain\n\nhello\n--x--\n",
    },
  },
  {
    name: "multipart without boundary lines",
    data: message([
      'Content-Type: multipart/mixed; boundary="never"',
      "",
      "hello",
    ]),
    expected: { subject: "", date: null, body: "" },
  },
  {
    name: "multipart without closing boundary",
    data: message([
      'Content-Type: multipart/mixed; boundary="b"',
      "",
      "--b",
      "Content-Type: text/plain",
      "",
      "unterminated",
    ]),
    expected: { subject: "", date: null, body: "unterminated\n" },
  },
  {
    name: "base64 with invalid characters",
    data: message([
      "Content-Transfer-Encoding: base64",
      "",
      "SGVsbG8g!!!d29y*bGQ=",
    ]),
    expected: { subject: "", date: null, body: "Hello world" },
  },
  {
    name: "truncated base64",
    data: message(["Content-Transfer-Encoding: base64", "", "SGVsbG8gd29ybG"]),
    expected: { subject: "", date: null, body: "Hello worl" },
  },
  {
    name: "unknown charset",
    data: message(["Content-Type: text/plain; charset=x-unknown", "", "abc"]),
    expected: { subject: "", date: null, body: "abc\n" },
  },
];

Deno.test("extractFields handles malformed messages", async (t) => {
  for (const testCase of MALFORMED_CASES) {
    await t.step(testCase.name, async () => {
      const fields = await extractFields(testCase.data);

      assert.equal(fields.subject, testCase.expected.subject);
      assert.equal(fields.date?.toISOString() ?? null, testCase.expected.date);
      assert.equal(fields.body, testCase.expected.body);
    });
  }
});

Deno.test("extractFields accepts binary garbage", async () => {
  const data = new Uint8Array(64 * 1024);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7919 + 13) % 256;

  const fields = await extractFields(data);

  assert.equal(typeof fields.subject, "string");
  assert.equal(fields.date, null);
  assert.equal(typeof fields.body, "string");
  assert.ok(!fields.body.includes("\r"));
});

Deno.test("extractFields reads a 10 MiB body", async () => {
  const line = "x".repeat(78);
  const lineCount = (10 * 1024 * 1024) / (line.length + 2);
  const data = message(["Subject: big", "", ...Array(lineCount).fill(line)]);

  const fields = await extractFields(data);

  assert.equal(fields.subject, "big");
  assert.equal(fields.body.length, lineCount * (line.length + 1));
  assert.equal(fields.body, `${line}\n`.repeat(lineCount));
});

Deno.test("extractFields converts a 10 MiB html body", async () => {
  const lineCount = Math.floor((10 * 1024 * 1024) / "a<br>\r\n".length);
  const lines = Array(lineCount).fill("a<br>");
  const data = message(["Content-Type: text/html", "", ...lines]);

  const fields = await extractFields(data);

  assert.equal(fields.body, Array(lineCount).fill("a").join("\n"));
});

Deno.test("extractFields handles unclosed html markup", async (t) => {
  const cases = [
    ["unclosed script", "<p>shown</p><script>hidden", "shown"],
    ["unclosed comment", "<p>shown</p><!-- hidden", "shown"],
    ["unclosed tag", "<p>shown</p><a href='x", "shown"],
    ["lone less-than", "1 < 2 and 3 <4", "1 < 2 and 3 <4"],
    ["many unclosed scripts", "x" + "<script>".repeat(100_000), "x"],
    ["many open tags", "x" + "<a ".repeat(100_000), "x"],
  ] as const;
  for (const [name, html, expected] of cases) {
    await t.step(name, async () => {
      const data = message(["Content-Type: text/html", "", html]);
      const fields = await extractFields(data);
      assert.equal(fields.body, expected);
    });
  }
});

Deno.test("extractFields falls back past parser limits", async () => {
  const logLines: string[] = [];
  const previousSink = setLogSink((line) => logLines.push(line));
  const header = `X-Filler: ${"x".repeat(990)}`;
  const data = message([
    "Subject: lost",
    ...Array(3000).fill(header),
    "",
    "body",
  ]);

  try {
    const fields = await extractFields(data);

    assert.equal(fields.subject, "");
    assert.equal(fields.date, null);
    assert.equal(fields.body, "");
    assert.equal(logLines.length, 1);
    assert.match(logLines[0] ?? "", / warn event=message_parse_failed /);
  } finally {
    setLogSink(previousSink);
  }
});

// ---------------------------------------------------------------------------
// Trace headers

const CONTEXT: TraceContext = {
  reversePath: "alice@example.org",
  forwardPaths: ["bob@example.com"],
  heloName: "mail.example.org",
  clientAddress: "192.0.2.1",
  hostname: "mx.example.com",
  protocol: "ESMTP",
  receivedAt: new Date(Date.UTC(2024, 0, 1, 9, 30, 5)),
  transactionId: "7f3a9c",
};

/** Decodes the trace headers and splits them into lines without CRLF. */
function traceLines(context: TraceContext): string[] {
  const text = decoder.decode(buildTraceHeaders(context));
  assert.ok(text.endsWith("\r\n"));
  return text.slice(0, -2).split("\r\n");
}

/** Removes the CRLF of each folded line, as RFC 5322 2.2.3 unfolds. */
function unfold(text: string): string {
  return text.replace(/\r\n(?=[ \t])/g, "");
}

/** Counts columns with a leading TAB as 8. */
function columns(line: string): number {
  return line.startsWith("\t") ? 8 + line.length - 1 : line.length;
}

Deno.test("buildTraceHeaders writes one recipient", () => {
  const text = decoder.decode(buildTraceHeaders(CONTEXT));

  assert.equal(
    text,
    "Return-Path: <alice@example.org>\r\n" +
      "Received: from mail.example.org ([192.0.2.1]) by mx.example.com (smtpstore)\r\n" +
      "\twith ESMTP id 7f3a9c for <bob@example.com>;\r\n" +
      "\tMon, 01 Jan 2024 09:30:05 +0000\r\n",
  );
});

Deno.test("buildTraceHeaders writes null reverse-path", () => {
  const lines = traceLines({ ...CONTEXT, reversePath: "" });

  assert.equal(lines[0], "Return-Path: <>");
});

Deno.test("buildTraceHeaders omits for with two recipients", () => {
  const context = {
    ...CONTEXT,
    forwardPaths: ["bob@example.com", "carol@example.com"],
  };

  const text = decoder.decode(buildTraceHeaders(context));

  assert.equal(
    text,
    "Return-Path: <alice@example.org>\r\n" +
      "Received: from mail.example.org ([192.0.2.1]) by mx.example.com (smtpstore)\r\n" +
      "\twith ESMTP id 7f3a9c; Mon, 01 Jan 2024 09:30:05 +0000\r\n",
  );
});

Deno.test("buildTraceHeaders writes IPv6 address literal", () => {
  const context = { ...CONTEXT, clientAddress: "2001:db8::1" };

  const text = unfold(decoder.decode(buildTraceHeaders(context)));

  assert.ok(text.includes("from mail.example.org ([IPv6:2001:db8::1])"));
});

Deno.test("buildTraceHeaders replaces control characters", () => {
  const context = {
    ...CONTEXT,
    heloName: "evil\r\nX-Injected: 1\x00\x7fé",
    forwardPaths: ["bob\r\n@example.com"],
  };

  const lines = traceLines(context);

  assert.ok(lines.every((line) => /^[\t\x20-\x7e]*$/.test(line)));
  assert.ok(lines.slice(2).every((line) => /^[ \t]/.test(line)));
  const received = lines.slice(1).join("\r\n");
  assert.ok(unfold(received).includes("from evil??X-Injected: 1???"));
  assert.ok(unfold(received).includes("for <bob??@example.com>;"));
});

Deno.test("buildTraceHeaders folds long lines", () => {
  const longName = `${"a".repeat(60)}.example.com`;
  const context = {
    ...CONTEXT,
    heloName: longName,
    hostname: longName,
    clientAddress: "2001:db8:1234:5678:9abc:def0:1234:5678",
  };

  const lines = traceLines(context);

  for (const line of lines) {
    const isSingleWord = /^\t\S+$/.test(line);
    assert.ok(columns(line) <= 78 || isSingleWord, `too long: ${line}`);
  }
  assert.ok(lines.slice(2).every((line) => line.startsWith("\t")));
  const received = unfold(lines.slice(1).join("\r\n")).replaceAll("\t", " ");
  assert.equal(
    received,
    `Received: from ${longName}` +
      " ([IPv6:2001:db8:1234:5678:9abc:def0:1234:5678])" +
      ` by ${longName} (smtpstore) with ESMTP id 7f3a9c` +
      " for <bob@example.com>; Mon, 01 Jan 2024 09:30:05 +0000",
  );
});

Deno.test("buildTraceHeaders writes receivedAt in UTC", () => {
  const context = {
    ...CONTEXT,
    receivedAt: new Date("2024-07-04T23:59:59-05:00"),
  };

  const text = decoder.decode(buildTraceHeaders(context));

  assert.ok(unfold(text).endsWith(";\tFri, 05 Jul 2024 04:59:59 +0000\r\n"));
});
