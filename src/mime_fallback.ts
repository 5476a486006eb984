/**
 * Subject, Date and body read from the top-level header section and body
 * without postal-mime, for messages past its limits.
 */

import { decodeWords } from "postal-mime";
import { parseDateTime } from "./date_time.ts";
import { htmlToText } from "./html_text.ts";

const windows1252 = new TextDecoder("windows-1252");

/** Subject, Date and text body, as the message module returns them. */
export interface TopLevelFields {
  readonly subject: string;
  readonly date: Date | null;
  readonly body: string;
}

/** Replaces CRLF and any bare CR with LF. */
export function toLfLineEnds(text: string): string {
  return text.replace(/\r\n?/g, "\n");
}

/** The top-level header fields that extractTopLevelFields reads. */
const TOP_LEVEL_FIELD_NAMES = new Set([
  "subject",
  "date",
  "content-type",
  "content-transfer-encoding",
]);

/** The top-level header fields of a message, unfolded, and its body. */
interface TopLevelPart {
  readonly fields: ReadonlyMap<string, string>;
  readonly body: Uint8Array;
}

/**
 * Extracts Subject and Date from the top-level header section, and the body
 * when the message is one text/plain or text/html part. Every step is one
 * pass over the bytes, so the time is linear in the message size.
 */
export function extractTopLevelFields(data: Uint8Array): TopLevelFields {
  const part = readTopLevelPart(data);
  const subject = part.fields.get("subject");
  const date = part.fields.get("date");
  return {
    subject: subject === undefined ? "" : decodeWords(subject),
    date: date === undefined ? null : parseDateTime(date),
    body: extractTopLevelBody(part),
  };
}

/**
 * Splits the message at the end of its header section: an empty line, or a
 * line that neither starts a field nor continues one, which then starts the
 * body. The first occurrence of each field in TOP_LEVEL_FIELD_NAMES is kept.
 */
function readTopLevelPart(data: Uint8Array): TopLevelPart {
  const fields = new Map<string, string>();
  let field: FieldLines | null = null;
  let start = 0;
  while (start < data.length) {
    const newline = data.indexOf(0x0a, start);
    const end = newline < 0 ? data.length : newline + 1;
    const line = removeLineEnd(data.subarray(start, end));
    if (line[0] === 0x20 || line[0] === 0x09) {
      field?.lines.push(line);
    } else {
      addField(fields, field);
      if (line.length === 0) return { fields, body: data.subarray(end) };

      const name = readFieldName(line);
      if (name === null) return { fields, body: data.subarray(start) };

      const isKept = TOP_LEVEL_FIELD_NAMES.has(name) && !fields.has(name);
      field = isKept ? { name, lines: [line] } : null;
    }
    start = end;
  }

  addField(fields, field);
  return { fields, body: data.subarray(data.length) };
}

/** The lines of one header field, without their line ends. */
interface FieldLines {
  readonly name: string;
  readonly lines: Uint8Array[];
}

function addField(fields: Map<string, string>, field: FieldLines | null): void {
  if (field !== null) fields.set(field.name, unfoldFieldBody(field.lines));
}

/** Removes the LF or CRLF that ends a line. */
function removeLineEnd(line: Uint8Array): Uint8Array {
  let end = line.length;
  if (line[end - 1] === 0x0a) end--;
  if (line[end - 1] === 0x0d) end--;
  return line.subarray(0, end);
}

/**
 * Returns the lower-case name of the field that the line starts, "" for an
 * mbox `From ` line, or null when the line starts no field. As postal-mime
 * 4.2.0 reads it, the name is printable ASCII without ":", and SP or HTAB
 * may come between it and the colon.
 */
function readFieldName(line: Uint8Array): string | null {
  let nameEnd = 0;
  while (nameEnd < line.length && isFieldNameByte(line[nameEnd])) nameEnd++;
  let colon = nameEnd;
  while (line[colon] === 0x20 || line[colon] === 0x09) colon++;
  if (line[colon] === 0x3a) {
    return windows1252.decode(line.subarray(0, colon)).toLowerCase();
  }

  const isMboxFrom = windows1252.decode(line.subarray(0, 5)) === "From ";
  return isMboxFrom ? "" : null;
}

function isFieldNameByte(byte: number | undefined): boolean {
  return byte !== undefined && byte >= 0x21 && byte <= 0x7e && byte !== 0x3a;
}

/**
 * Joins a field's lines, which removes the CRLF of each fold and keeps its
 * whitespace, and returns the text after the colon without the SP and HTAB
 * around it.
 */
function unfoldFieldBody(lines: readonly Uint8Array[]): string {
  const unfolded = lines.map(decodeHeaderLine).join("");
  const value = unfolded.slice(unfolded.indexOf(":") + 1);
  return trimWhitespace(value.replace(/[\r\n]+/g, " "));
}

const headerUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Decodes a header line as UTF-8 (RFC 6532), or as windows-1252 when it is
 * not valid UTF-8, as postal-mime 4.2.0 does for raw 8-bit header text.
 */
function decodeHeaderLine(line: Uint8Array): string {
  return decodeUtf8OrWindows1252(line, headerUtf8);
}

/**
 * Decodes bytes with a fatal UTF-8 decoder, or as windows-1252 when they are
 * not well-formed UTF-8, as postal-mime 4.2.0 does for text without a
 * charset.
 */
function decodeUtf8OrWindows1252(
  bytes: Uint8Array,
  strictUtf8: TextDecoder,
): string {
  try {
    return strictUtf8.decode(bytes);
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    return windows1252.decode(bytes);
  }
}

/** Removes leading and trailing SP and HTAB, and no other whitespace. */
function trimWhitespace(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isWhitespace(text[start])) start++;
  while (end > start && isWhitespace(text[end - 1])) end--;
  return text.slice(start, end);
}

/**
 * Decodes the body by the top-level Content-Transfer-Encoding and charset
 * when the Content-Type is text/plain, text/html or missing.
 */
function extractTopLevelBody(part: TopLevelPart): string {
  const contentType = parseContentType(part.fields.get("content-type"));
  const isHtml = contentType.mediaType === "text/html";
  // NOTE: a multipart or non-text message past postal-mime's limits gets an
  // empty body, because this fallback reads no MIME parts.
  if (contentType.mediaType !== "text/plain" && !isHtml) return "";

  const encoding = part.fields.get("content-transfer-encoding");
  const bytes = decodeTransferEncoding(part.body, encoding);
  const text = decodeText(bytes, contentType.charset, isHtml);
  return toLfLineEnds(isHtml ? htmlToText(text) : text);
}

interface ContentType {
  /** Lower-case `type/subtype`. */
  readonly mediaType: string;
  readonly charset: string | undefined;
}

/**
 * Parses a Content-Type field body. A missing value, or one without a
 * `/`, is text/plain (RFC 2045 5.2).
 */
function parseContentType(value: string | undefined): ContentType {
  const field = parseStructuredField(removeComments(value ?? ""));
  const mediaType = field.value.toLowerCase();
  // NOTE: RFC 2231 parameters such as `charset*=utf-8''iso-8859-1` are
  // ignored, so such a body is decoded as if it had no charset, where
  // postal-mime 4.2.0 decodes the parameter.
  return {
    mediaType: mediaType.includes("/") ? mediaType : "text/plain",
    charset: field.parameters.get("charset"),
  };
}

/**
 * Removes RFC 5322 comments, which may nest, from a structured field body,
 * by the rules of postal-mime 4.2.0. A backslash escapes the next character
 * and a quoted string contains no comment. Inside a parameter value a `(`
 * opens a comment only after SP or HTAB, so `name=a(1).txt` keeps its
 * parentheses.
 * An unclosed comment is removed when no `;` follows it, and otherwise the
 * text is returned unchanged, so that the parameters after it stay.
 */
function removeComments(text: string): string {
  const keptRuns: string[] = [];
  let keptStart = 0;
  let depth = 0;
  let commentStart = -1;
  let inQuotes = false;
  let inParameterValue = false;
  let isEscaped = false;
  let lastKept = "";
  for (let i = 0; i < text.length; i++) {
    const char = text.charAt(i);
    if (isEscaped) {
      isEscaped = false;
    } else if (char === "\\") {
      isEscaped = true;
    } else if (char === '"' && depth === 0) {
      inQuotes = !inQuotes;
    } else if (!inQuotes) {
      const opensComment = char === "(" &&
        (!inParameterValue || isWhitespace(lastKept));
      if (opensComment || (char === ")" && depth > 0)) {
        if (depth === 0) {
          keptRuns.push(text.slice(keptStart, i));
          commentStart = i;
        }
        depth += opensComment ? 1 : -1;
        keptStart = i + 1;
        continue;
      }
      if (depth === 0 && char === "=") inParameterValue = true;
      if (depth === 0 && char === ";") inParameterValue = false;
    }
    if (depth === 0) lastKept = char;
  }

  if (depth === 0) {
    keptRuns.push(text.slice(keptStart));
    return keptRuns.join("");
  }
  return text.includes(";", commentStart) ? text : keptRuns.join("");
}

/** A structured field body: its value and its parameters by lower-case name. */
interface StructuredField {
  readonly value: string;
  readonly parameters: ReadonlyMap<string, string>;
}

/**
 * Splits a structured field body without comments at each `;` outside a
 * quoted string into its value and parameters (RFC 2045 5.1). As in
 * postal-mime 4.2.0, the first of two parameters with one name wins and a
 * parameter without `=` has the value "".
 */
function parseStructuredField(text: string): StructuredField {
  const first = readParameterValue(text, 0);
  const parameters = new Map<string, string>();
  let position = first.end;
  while (position < text.length) {
    const nameStart = position + 1;
    let nameEnd = nameStart;
    while (nameEnd < text.length && !isNameEnd(text.charAt(nameEnd))) {
      nameEnd++;
    }
    const name = text.slice(nameStart, nameEnd).trim().toLowerCase();
    let value = "";
    position = nameEnd;
    if (text.charAt(nameEnd) === "=") {
      const parsed = readParameterValue(text, nameEnd + 1);
      value = parsed.value;
      position = parsed.end;
    }
    if (name !== "" && !parameters.has(name)) parameters.set(name, value);
  }
  return { value: first.value, parameters };
}

function isNameEnd(char: string): boolean {
  return char === "=" || char === ";";
}

/** A value read from a field body, and the index of the `;` or end after it. */
interface ValueEnd {
  readonly value: string;
  readonly end: number;
}

/**
 * Reads a value from `start` to the next `;` outside a quoted string. SP and
 * HTAB around it are dropped, and a quoted string is unquoted with its
 * quoted-pairs resolved (RFC 5322 3.2.4). Text between a closing quote and
 * the `;` is dropped, because a value is a token or a quoted string (RFC
 * 2045 5.1), not both.
 */
function readParameterValue(text: string, start: number): ValueEnd {
  const pieces: string[] = [];
  let spaceStart = -1;
  let position = start;
  while (position < text.length) {
    const char = text.charAt(position);
    if (char === ";") break;

    if (isWhitespace(char)) {
      if (spaceStart < 0) spaceStart = position;
      position++;
      continue;
    }

    if (spaceStart >= 0 && pieces.length > 0) {
      pieces.push(text.slice(spaceStart, position));
    }
    spaceStart = -1;
    if (char === '"') {
      const quoted = readQuotedString(text, position + 1);
      pieces.push(quoted.value);
      const semicolon = text.indexOf(";", quoted.end);
      const end = semicolon < 0 ? text.length : semicolon;
      return { value: pieces.join(""), end };
    }

    let tokenEnd = position + 1;
    while (tokenEnd < text.length && !isTokenEnd(text.charAt(tokenEnd))) {
      tokenEnd++;
    }
    pieces.push(text.slice(position, tokenEnd));
    position = tokenEnd;
  }
  return { value: pieces.join(""), end: position };
}

function isTokenEnd(char: string): boolean {
  return char === ";" || char === '"' || isWhitespace(char);
}

/**
 * Reads the content of a quoted string that starts after its opening quote,
 * with each backslash removed and the character after it kept. An unclosed
 * quoted string runs to the end of the text.
 */
function readQuotedString(text: string, start: number): ValueEnd {
  const pieces: string[] = [];
  let runStart = start;
  let position = start;
  while (position < text.length) {
    const char = text.charAt(position);
    if (char === '"') {
      pieces.push(text.slice(runStart, position));
      return { value: pieces.join(""), end: position + 1 };
    }

    if (char === "\\") {
      pieces.push(text.slice(runStart, position));
      runStart = position + 1;
      position += 2;
    } else {
      position++;
    }
  }
  pieces.push(text.slice(runStart));
  return { value: pieces.join(""), end: text.length };
}

/**
 * Decodes base64 and quoted-printable, and returns the bytes of any other
 * Content-Transfer-Encoding as they are.
 */
function decodeTransferEncoding(
  bytes: Uint8Array,
  encoding: string | undefined,
): Uint8Array {
  const mechanism = readMechanism(encoding ?? "");
  if (mechanism === "base64") return decodeBase64(bytes);
  if (mechanism === "quoted-printable") return decodeQuotedPrintable(bytes);
  return bytes;
}

/**
 * Returns the lower-case token that starts a Content-Transfer-Encoding field
 * body once comments are removed, as postal-mime 4.2.0 reads it: `base64
 * (note)` and `base64 x` are base64, and a quoted `"base64"` is no mechanism.
 */
function readMechanism(value: string): string {
  const text = removeComments(value).toLowerCase();
  let start = 0;
  while (isWhitespace(text.charAt(start))) start++;
  let end = start;
  while (end < text.length && isMechanismChar(text.charCodeAt(end))) end++;
  return text.slice(start, end);
}

/** Returns whether a UTF-16 code unit is an ASCII letter, digit, `_` or `-`. */
function isMechanismChar(code: number): boolean {
  return (code >= 0x30 && code <= 0x39) || (code >= 0x61 && code <= 0x7a) ||
    (code >= 0x41 && code <= 0x5a) || code === 0x5f || code === 0x2d;
}

/** The value of each base64 character by its byte, -1 for other bytes. */
const BASE64_VALUES = (() => {
  const alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const values = new Int8Array(256).fill(-1);
  for (let i = 0; i < alphabet.length; i++) values[alphabet.charCodeAt(i)] = i;
  return values;
})();

/**
 * Decodes base64 as postal-mime 4.2.0 does, skipping line breaks and every
 * other byte outside the alphabet. Each `=` ends a group: the bits that make
 * no whole byte are dropped and the next character starts a new group, so a
 * body that pads every line decodes line by line. Truncated input keeps the
 * bytes it has.
 */
function decodeBase64(bytes: Uint8Array): Uint8Array {
  const output = new Uint8Array(Math.ceil((bytes.length * 3) / 4));
  let length = 0;
  let buffer = 0;
  let bitCount = 0;
  for (const byte of bytes) {
    if (byte === 0x3d) {
      buffer = 0;
      bitCount = 0;
      continue;
    }

    const value = BASE64_VALUES[byte] ?? -1;
    if (value < 0) continue;

    buffer = ((buffer << 6) | value) & 0xffff;
    bitCount += 6;
    if (bitCount >= 8) {
      bitCount -= 8;
      output[length++] = (buffer >> bitCount) & 0xff;
    }
  }
  return output.subarray(0, length);
}

/**
 * Decodes quoted-printable (RFC 2045 6.7): `=` and two hex digits is a byte,
 * `=` at the end of a line is a soft line break, and any other `=` stays.
 */
function decodeQuotedPrintable(bytes: Uint8Array): Uint8Array {
  const output = new Uint8Array(bytes.length);
  let length = 0;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i] ?? 0;
    const high = hexDigitValue(bytes[i + 1]);
    const low = hexDigitValue(bytes[i + 2]);
    if (byte !== 0x3d) {
      output[length++] = byte;
    } else if (high >= 0 && low >= 0) {
      output[length++] = high * 16 + low;
      i += 2;
    } else if (bytes[i + 1] === 0x0d && bytes[i + 2] === 0x0a) {
      i += 2;
    } else if (bytes[i + 1] === 0x0a) {
      i += 1;
    } else {
      output[length++] = byte;
    }
  }
  return output.subarray(0, length);
}

/** Returns the value of an ASCII hex digit, or -1 for any other byte. */
function hexDigitValue(byte: number | undefined): number {
  if (byte === undefined) return -1;
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  const lower = byte | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

/** The TextDecoder members that decodeText uses. */
type Decoder = Pick<TextDecoder, "encoding" | "decode">;

const utf8 = new TextDecoder();
const bodyUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Decodes a text body as postal-mime 4.2.0 does: in the declared charset,
 * else for HTML in the charset that a `<meta>` tag names, else as UTF-8 when
 * the bytes are well-formed UTF-8 and as windows-1252 when not. A label that
 * names no encoding counts as no charset.
 */
function decodeText(
  bytes: Uint8Array,
  charset: string | undefined,
  isHtml: boolean,
): string {
  if (charset !== undefined && charset !== "") {
    const decoder = findDecoder(charset, bytes);
    if (decoder === null) return decodeUtf8OrWindows1252(bytes, bodyUtf8);
    return decoder.decode(bytes);
  }

  const metaCharset = isHtml ? findMetaCharset(bytes) : null;
  const decoder = metaCharset === null ? null : findDecoder(metaCharset, bytes);
  // A <meta> tag readable as ASCII rules out UTF-16, and postal-mime reads
  // x-user-defined there as windows-1252.
  if (decoder === null || decoder.encoding.startsWith("utf-16")) {
    return decodeUtf8OrWindows1252(bytes, bodyUtf8);
  }
  if (decoder.encoding === "x-user-defined") return windows1252.decode(bytes);
  return decoder.decode(bytes);
}

/**
 * Encoding Standard labels of the replacement encoding, which TextDecoder
 * rejects and which a browser and postal-mime 4.2.0 decode as one U+FFFD.
 */
const REPLACEMENT_LABELS = new Set([
  "csiso2022kr",
  "hz-gb-2312",
  "iso-2022-cn",
  "iso-2022-cn-ext",
  "iso-2022-kr",
  "replacement",
]);

const replacementDecoder: Decoder = {
  encoding: "replacement",
  decode: (input) =>
    input !== undefined && input.byteLength > 0 ? "\ufffd" : "",
};

/**
 * Returns the decoder that postal-mime 4.2.0 picks for a charset label, or
 * null when the label names no encoding. Of the UTF-16 labels it accepts
 * only utf-16, utf16, utf_16, utf-16le and utf-16be. Under the first three a
 * byte order mark picks the byte order, which is little-endian without one.
 */
function findDecoder(charset: string, bytes: Uint8Array): Decoder | null {
  const label = charset.trim().toLowerCase();
  if (REPLACEMENT_LABELS.has(label)) return replacementDecoder;
  if (label === "utf-16" || label === "utf16" || label === "utf_16") {
    const isBigEndian = bytes[0] === 0xfe && bytes[1] === 0xff;
    return new TextDecoder(isBigEndian ? "utf-16be" : "utf-16le");
  }

  // NOTE: postal-mime 4.2.0 also maps labels outside the Encoding Standard
  // (cp932, euc_jp, x-big5 and the like) through its own alias table, and
  // such a body is decoded here as if it had no charset.
  let decoder: TextDecoder;
  try {
    decoder = new TextDecoder(label);
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    return null;
  }
  const isUtf16 = decoder.encoding.startsWith("utf-16");
  return isUtf16 && decoder.encoding !== label ? null : decoder;
}

/** Bytes of an HTML body searched for a `<meta>` charset, as in a browser. */
const META_PRESCAN_BYTES = 1024;

/** `charset=` in a `<meta charset>` or `<meta http-equiv>` tag. */
const META_CHARSET = /charset\s*=\s*["']?\s*([^\s"';>]+)/;

/**
 * Returns the charset label that the first `<meta>` tag naming one gives in
 * the first 1024 bytes of an HTML body, or null when no tag does.
 */
function findMetaCharset(bytes: Uint8Array): string | null {
  const head = utf8.decode(bytes.subarray(0, META_PRESCAN_BYTES)).toLowerCase();
  let tagStart = head.indexOf("<meta");
  while (tagStart >= 0) {
    const tagClose = head.indexOf(">", tagStart);
    const tagEnd = tagClose < 0 ? head.length : tagClose;
    const match = META_CHARSET.exec(head.slice(tagStart, tagEnd));
    if (match?.[1] !== undefined) return match[1];

    tagStart = head.indexOf("<meta", tagEnd);
  }
  return null;
}

function isWhitespace(char: string | undefined): boolean {
  return char === " " || char === "\t";
}
