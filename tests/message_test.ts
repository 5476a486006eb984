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

/**
 * Header lines that take postal-mime 4.2.0 past its 2 MiB header limit,
 * which counts each line as at least 64 bytes: 32768 lines reach it, and
 * any other header line in the message goes over.
 */
const FILLER_LINES: readonly string[] = Array(32768).fill("X:y");

/** Builds a message past the header limit from its header and body lines. */
function messagePastLimit(
  headers: readonly string[],
  body: readonly string[],
): Uint8Array {
  return message([...headers, ...FILLER_LINES, "", ...body]);
}

const FALLBACK_CASES: readonly {
  name: string;
  data: Uint8Array;
  expected: { subject: string; date: string | null; body: string };
}[] = [
  {
    name: "plain text",
    data: encoder.encode(
      "Subject: real subject\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n" +
        "X:y\r\n".repeat(32767) + "\r\nthe body\r\n",
    ),
    expected: {
      subject: "real subject",
      date: "2024-01-01T10:00:00.000Z",
      body: "the body\n",
    },
  },
  {
    name: "fields after the filler",
    data: message([
      ...FILLER_LINES,
      "Subject: last",
      "Date: Tue, 2 Jan 2024 10:00:00 +0200",
      "",
      "text",
    ]),
    expected: {
      subject: "last",
      date: "2024-01-02T08:00:00.000Z",
      body: "text\n",
    },
  },
  {
    name: "folded encoded Subject",
    data: messagePastLimit([
      "Subject: =?UTF-8?Q?Gr=C3=BC?=",
      " =?UTF-8?Q?=C3=9Fe?= aus",
      "\t  K=?ISO-8859-1?Q?=F6?=ln",
    ], ["x"]),
    expected: { subject: "Grüße aus\t  Köln", date: null, body: "x\n" },
  },
  {
    name: "raw ISO-8859-1 Subject",
    data: latin1Bytes(
      "Subject: Caf\xe9 cr\xe8me\r\n" + "X:y\r\n".repeat(32768) +
        "\r\nbody\r\n",
    ),
    expected: { subject: "Café crème", date: null, body: "body\n" },
  },
  {
    name: "first of two Subject and Date fields",
    data: messagePastLimit([
      "subject:  first  ",
      "Date: Mon, 1 Jan 2024 10:00:00 GMT (comment)",
      "Subject: second",
      "Date: Tue, 2 Jan 2024 10:00:00 +0000",
    ], ["x"]),
    expected: {
      subject: "first",
      date: "2024-01-01T10:00:00.000Z",
      body: "x\n",
    },
  },
  {
    name: "Subject with space before colon ignored",
    data: messagePastLimit(["Subject : not this", "Subject: this"], ["x"]),
    expected: { subject: "this", date: null, body: "x\n" },
  },
  {
    name: "invalid Date",
    data: messagePastLimit(["Subject: s", "Date: 30 Feb 2023 10:00"], ["x"]),
    expected: { subject: "s", date: null, body: "x\n" },
  },
  {
    name: "quoted-printable ISO-8859-1",
    data: messagePastLimit([
      "Subject: qp",
      'Content-Type: text/plain; format=flowed; charset="ISO-8859-1"',
      "Content-Transfer-Encoding: Quoted-Printable",
    ], ["Caf=E9 cr=E8me=", "br=FBl=E9e =3D 1=", "= stays =ZZ"]),
    expected: {
      subject: "qp",
      date: null,
      body: "Café crèmebrûlée = 1= stays =ZZ\n",
    },
  },
  {
    name: "base64 UTF-8 with invalid characters",
    data: messagePastLimit([
      "Subject: b64",
      "Content-Type: text/plain; charset=utf-8",
      "Content-Transfer-Encoding: base64",
    ], [
      "R3LDvMOfZQ0K!!",
      "w5xiZXIN*Cg==",
    ]),
    expected: { subject: "b64", date: null, body: "Grüße\nÜber\n" },
  },
  {
    name: "truncated base64",
    data: messagePastLimit(["Content-Transfer-Encoding: base64"], [
      "SGVsbG8gd29ybG",
    ]),
    expected: { subject: "", date: null, body: "Hello worl" },
  },
  {
    name: "unknown charset as UTF-8",
    data: messagePastLimit(["Content-Type: text/plain; charset=x-unknown"], [
      "na\u00efve",
    ]),
    expected: { subject: "", date: null, body: "na\u00efve\n" },
  },
  {
    name: "invalid UTF-8 as windows-1252",
    data: Uint8Array.from([
      ...message(["Subject: bad bytes", ...FILLER_LINES, ""]),
      0x61,
      0xff,
      0x62,
    ]),
    expected: { subject: "bad bytes", date: null, body: "a\u00ffb" },
  },
  {
    name: "html as text",
    data: messagePastLimit(["Content-Type: text/html"], [
      "<p>Hello &amp; welcome</p><p>second</p>",
    ]),
    expected: { subject: "", date: null, body: "Hello & welcome\nsecond" },
  },
  {
    name: "Content-Type without subtype as text",
    data: messagePastLimit(["Content-Type: garbage"], ["text"]),
    expected: { subject: "", date: null, body: "text\n" },
  },
  {
    name: "attachment as empty",
    data: messagePastLimit([
      "Subject: file",
      "Content-Type: application/octet-stream",
    ], ["AAECAw=="]),
    expected: { subject: "file", date: null, body: "" },
  },
  {
    name: "multipart as empty",
    data: messagePastLimit([
      "Subject: parts",
      'Content-Type: multipart/mixed; boundary="b"',
    ], ["--b", "Content-Type: text/plain", "", "hidden", "--b--"]),
    expected: { subject: "parts", date: null, body: "" },
  },
  {
    name: "headers only without empty line",
    data: messagePastLimit(["Subject: s"], []).subarray(0, -2),
    expected: { subject: "s", date: null, body: "" },
  },
  {
    name: "body after a line that is no field",
    data: message(["Subject: s", ...FILLER_LINES, "no field here", "more"]),
    expected: { subject: "s", date: null, body: "no field here\nmore\n" },
  },
  {
    name: "too many parts",
    data: message([
      "Subject: many parts",
      "Content-Type: multipart/mixed; boundary=b",
      "",
      ...Array(10001).fill("--b\r\n\r\nx"),
      "--b--",
    ]),
    expected: { subject: "many parts", date: null, body: "" },
  },
  {
    name: "too deep nesting",
    data: message([
      "Subject: deep",
      ...Array.from({ length: 300 }, (_, depth) => [
        `Content-Type: multipart/mixed; boundary=b${depth}`,
        "",
        `--b${depth}`,
      ]).flat(),
      "",
      "inner",
    ]),
    expected: { subject: "deep", date: null, body: "" },
  },
];

Deno.test("extractFields falls back past parser limits", async (t) => {
  const logLines: string[] = [];
  const previousSink = setLogSink((line) => logLines.push(line));
  try {
    for (const testCase of FALLBACK_CASES) {
      await t.step(testCase.name, async () => {
        logLines.length = 0;

        const fields = await extractFields(testCase.data);

        assert.equal(fields.subject, testCase.expected.subject);
        assert.equal(
          fields.date?.toISOString() ?? null,
          testCase.expected.date,
        );
        assert.equal(fields.body, testCase.expected.body);
        assert.equal(logLines.length, 1);
        assert.match(logLines[0] ?? "", / warn event=message_parse_failed /);
      });
    }
  } finally {
    setLogSink(previousSink);
  }
});

/**
 * Bodies that the fallback must decode as postal-mime 4.2.0 does. Header and
 * body lines are written one byte per character, so `\xe9` is a raw byte.
 */
const BODY_AGREEMENT_CASES: readonly {
  name: string;
  headers: readonly string[];
  body: readonly string[];
  expected: string;
}[] = [
  {
    name: "base64 padded on each line",
    headers: ["Content-Transfer-Encoding: base64"],
    body: ["aGVsbG8g", "d29ybGQ=", "IGFnYWlu"],
    expected: "hello world again",
  },
  {
    name: "base64 padded groups",
    headers: ["Content-Transfer-Encoding: base64"],
    body: ["aGk=", "dGhlcmU="],
    expected: "hithere",
  },
  {
    name: "Content-Transfer-Encoding with comment",
    headers: ["Content-Transfer-Encoding: base64 (encoded)"],
    body: ["aGk="],
    expected: "hi",
  },
  {
    name: "Content-Type with comment",
    headers: ["Content-Type: text/plain (comment); charset=iso-8859-1"],
    body: ["caf\xe9"],
    expected: "caf\u00e9\n",
  },
  {
    name: "nested comments around charset",
    headers: [
      "Content-Type: text/plain (a (b)); charset= (latin 2) iso-8859-2 (c)",
    ],
    body: ["\xb1"],
    expected: "\u0105\n",
  },
  {
    name: "semicolon in quoted parameter",
    headers: [
      'Content-Type: text/plain; name="a;charset=utf-16"; charset=iso-8859-1',
    ],
    body: ["caf\xe9"],
    expected: "caf\u00e9\n",
  },
  {
    name: "quoted-pair in charset",
    headers: ['Content-Type: text/plain; charset="iso\\-8859-2"'],
    body: ["\xb1"],
    expected: "\u0105\n",
  },
  {
    name: "8-bit without charset as windows-1252",
    headers: ["Subject: no charset"],
    body: ["caf\xe9 \x80"],
    expected: "caf\u00e9 \u20ac\n",
  },
  {
    name: "UTF-8 without charset",
    headers: ["Subject: no charset"],
    body: ["caf\xc3\xa9"],
    expected: "caf\u00e9\n",
  },
  {
    name: "unknown charset as windows-1252",
    headers: ["Content-Type: text/plain; charset=x-unknown"],
    body: ["caf\xe9"],
    expected: "caf\u00e9\n",
  },
  {
    name: "html charset from meta tag",
    headers: ["Content-Type: text/html"],
    body: ['<meta charset="iso-8859-2"><p>\xb1</p>'],
    expected: "\u0105",
  },
  {
    name: "replacement charset",
    headers: ["Content-Type: text/plain; charset=iso-2022-kr"],
    body: ["<b>"],
    expected: "\ufffd",
  },
  {
    name: "utf-16 with big-endian byte order mark",
    headers: [
      "Content-Type: text/plain; charset=utf-16",
      "Content-Transfer-Encoding: base64",
    ],
    body: [base64(Uint8Array.from([0xfe, 0xff, 0x00, 0x68, 0x00, 0x69]))],
    expected: "hi",
  },
];

/** Joins lines with CRLF and encodes each character as one byte. */
function latin1Message(lines: readonly string[]): Uint8Array {
  return latin1Bytes(lines.map((line) => `${line}\r\n`).join(""));
}

Deno.test("extractFields fallback body matches postal-mime", async (t) => {
  const logLines: string[] = [];
  const previousSink = setLogSink((line) => logLines.push(line));
  try {
    for (const testCase of BODY_AGREEMENT_CASES) {
      await t.step(testCase.name, async () => {
        logLines.length = 0;

        const parsed = await extractFields(
          latin1Message([...testCase.headers, "", ...testCase.body]),
        );
        const parsedLogCount = logLines.length;
        const fallback = await extractFields(
          latin1Message([
            ...testCase.headers,
            ...FILLER_LINES,
            "",
            ...testCase.body,
          ]),
        );

        assert.equal(parsed.body, testCase.expected);
        assert.equal(parsedLogCount, 0);
        assert.equal(fallback.body, testCase.expected);
        assert.equal(logLines.length, 1);
        assert.match(logLines[0] ?? "", / warn event=message_parse_failed /);
      });
    }
  } finally {
    setLogSink(previousSink);
  }
});

Deno.test("extractFields falls back on 10 MiB headers", async (t) => {
  const previousSink = setLogSink(() => {});
  const mebibytes = 10 * 1024 * 1024;
  try {
    await t.step("folded Subject", async () => {
      const fold = ` ${"word ".repeat(15)}word`;
      const foldCount = Math.floor(mebibytes / (fold.length + 2));
      const data = message([
        "Subject: start",
        ...Array(foldCount).fill(fold),
        "",
        "body",
      ]);

      const fields = await extractFields(data);

      assert.equal(fields.subject, "start" + fold.repeat(foldCount));
      assert.equal(fields.body, "body\n");
    });

    await t.step("whitespace runs in Subject and Date", async () => {
      const spaces = " ".repeat(mebibytes / 4);
      const data = messagePastLimit([
        `Subject: a${spaces}b`,
        `Date: 1${spaces}Jan${spaces}2024 10:00:00 +0000`,
      ], ["body"]);

      const fields = await extractFields(data);

      assert.equal(fields.subject, `a${spaces}b`);
      assert.equal(fields.date?.toISOString(), "2024-01-01T10:00:00.000Z");
    });

    await t.step("long line that is no field", async () => {
      const name = "X".repeat(mebibytes);
      const data = message(["Subject: s", ...FILLER_LINES, name, "", "body"]);

      const fields = await extractFields(data);

      assert.equal(fields.subject, "s");
      assert.equal(fields.body, `${name}\n\nbody\n`);
    });
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
      "Received: from mail.example.org ([192.0.2.1])\r\n" +
      "\tby mx.example.com (smtpstore)\r\n" +
      "\twith ESMTP id 7f3a9c\r\n" +
      "\tfor <bob@example.com>;\r\n" +
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
      "Received: from mail.example.org ([192.0.2.1])\r\n" +
      "\tby mx.example.com (smtpstore)\r\n" +
      "\twith ESMTP id 7f3a9c;\r\n" +
      "\tMon, 01 Jan 2024 09:30:05 +0000\r\n",
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

/** The forward-path of a long quoted local part with two spaces. */
const QUOTED_SPACES_PATH = `"${"q".repeat(35)}  b"@${"d".repeat(60)}.` +
  `${"e".repeat(10)}.example`;

Deno.test("buildTraceHeaders keeps spaces of quoted local part", () => {
  const context = {
    ...CONTEXT,
    hostname: "mx.attack.test",
    forwardPaths: [QUOTED_SPACES_PATH],
  };

  const lines = traceLines(context);

  assert.deepEqual(lines.slice(1), [
    "Received: from mail.example.org ([192.0.2.1])",
    "\tby mx.attack.test (smtpstore)",
    "\twith ESMTP id 7f3a9c",
    "\tfor",
    ` <${QUOTED_SPACES_PATH}>;`,
    "\tMon, 01 Jan 2024 09:30:05 +0000",
  ]);
});

/** Returns the text before the first whitespace outside `<...>`. */
function firstWord(text: string): string {
  let angleDepth = 0;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char === "<") angleDepth++;
    if (char === ">") angleDepth--;
    if (angleDepth === 0 && (char === " " || char === "\t")) {
      return text.slice(0, i);
    }
  }
  return text;
}

/** Counts the occurrences of `char` in `text`. */
function count(text: string, char: string): number {
  return text.split(char).length - 1;
}

const FOLD_HOSTNAMES = [
  "mx.attack.test",
  "mx.example.com",
  `${"h".repeat(60)}.example.com`,
  `${"h".repeat(90)}.example.com`,
];

const FOLD_HELO_NAMES = [
  "mail.example.org",
  "[192.0.2.1]",
  `${"a".repeat(60)}.example.org`,
  `${"a".repeat(100)}.example.org`,
];

const FOLD_CLIENTS = [
  { address: "192.0.2.1", literal: "[192.0.2.1]" },
  {
    address: "2001:db8:1234:5678:9abc:def0:1234:5678",
    literal: "[IPv6:2001:db8:1234:5678:9abc:def0:1234:5678]",
  },
];

const FOLD_FORWARD_PATHS: readonly (readonly string[])[] = [
  ["bob@example.com"],
  [QUOTED_SPACES_PATH],
  ['"john smith"@example.com'],
  ['"a b"@' + "d".repeat(40) + ".example"],
  [`"x  y  z"@${"d".repeat(50)}.example`],
  [`"${"q".repeat(70)} b"@example.com`],
  [`"${"q ".repeat(30)}"@example.com`],
  ["bob@example.com", '"carol  c"@example.com'],
];

Deno.test("buildTraceHeaders folds at existing whitespace", () => {
  for (const hostname of FOLD_HOSTNAMES) {
    for (const heloName of FOLD_HELO_NAMES) {
      for (const client of FOLD_CLIENTS) {
        for (const forwardPaths of FOLD_FORWARD_PATHS) {
          const context = {
            ...CONTEXT,
            hostname,
            heloName,
            clientAddress: client.address,
            forwardPaths,
          };
          const forClause = forwardPaths.length === 1
            ? `\tfor <${forwardPaths[0]}>`
            : "";
          const expected = `Received: from ${heloName} (${client.literal})` +
            `\tby ${hostname} (smtpstore)\twith ESMTP id 7f3a9c` +
            `${forClause};\tMon, 01 Jan 2024 09:30:05 +0000`;
          const label = JSON.stringify(context);

          const lines = traceLines(context).slice(1);
          const received = lines.join("\r\n");

          assert.equal(unfold(received), expected, label);
          assert.equal(
            count(received, "\t"),
            count(received, "\r\n\t"),
            `every TAB starts a line: ${label}`,
          );
          lines.forEach((line, index) => {
            const where = `line ${index} of ${label}`;
            const before = lines.slice(0, index).join("");
            const word = firstWord(line.slice(1));
            assert.match(line, /[^ \t]/, `whitespace-only ${where}`);
            assert.ok(
              columns(line) <= 78 || line.length === word.length + 1,
              `too long: ${where}`,
            );
            assert.equal(count(before, "<"), count(before, ">"), where);
            assert.equal(count(before, '"') % 2, 0, where);
            if (index > 0 && line.startsWith(" ")) {
              const previous = lines[index - 1] ?? "";
              assert.ok(
                columns(previous) + word.length + 1 > 78,
                `needless fold: ${where}`,
              );
            }
          });
        }
      }
    }
  }
});

Deno.test("buildTraceHeaders writes receivedAt in UTC", () => {
  const context = {
    ...CONTEXT,
    receivedAt: new Date("2024-07-04T23:59:59-05:00"),
  };

  const text = decoder.decode(buildTraceHeaders(context));

  assert.ok(unfold(text).endsWith(";\tFri, 05 Jul 2024 04:59:59 +0000\r\n"));
});
