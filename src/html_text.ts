/** Plain text from the HTML part of a message. */

/** Elements whose content is not shown as text. */
const HIDDEN_ELEMENTS = new Set(["script", "style", "title", "template"]);

/** Elements that start and end a line. */
const BLOCK_ELEMENTS = new Set([
  "address",
  "article",
  "aside",
  "blockquote",
  "dd",
  "div",
  "dl",
  "dt",
  "fieldset",
  "figure",
  "footer",
  "form",
  "h1",
  "h2",
  "h3",
  "h4",
  "h5",
  "h6",
  "header",
  "hr",
  "li",
  "main",
  "nav",
  "ol",
  "p",
  "pre",
  "section",
  "table",
  "tr",
  "ul",
]);

/** Table cells, whose contents are separated by a space. */
const CELL_ELEMENTS = new Set(["td", "th"]);

const TAG_START = /<(\/?)([a-z][a-z0-9-]*)/iy;

/**
 * Converts HTML to plain text: tags removed, entities decoded, block
 * elements and `<br>` as line breaks, the content of script, style, title
 * and template dropped, whitespace collapsed outside `<pre>`. Every search
 * moves the position past the text it covered, so the time is linear in the
 * length of the HTML.
 */
export function htmlToText(html: string): string {
  const builder = new PlainTextBuilder();
  let position = 0;
  while (position < html.length) {
    const tagStart = html.indexOf("<", position);
    const textEnd = tagStart < 0 ? html.length : tagStart;
    builder.addText(html.slice(position, textEnd));
    if (tagStart < 0) break;

    position = readMarkup(html, tagStart, builder);
  }
  return builder.toString();
}

/**
 * Reads the comment, declaration or tag that starts at `start` and returns
 * the position after it. A `<` that starts none of them is text.
 */
function readMarkup(
  html: string,
  start: number,
  builder: PlainTextBuilder,
): number {
  if (html.startsWith("<!--", start)) {
    return positionAfter(html, "-->", start + 4);
  }
  const next = html[start + 1];
  if (next === "!" || next === "?") return positionAfter(html, ">", start);

  TAG_START.lastIndex = start;
  const match = TAG_START.exec(html);
  if (match === null) {
    builder.addText("<");
    return start + 1;
  }

  const tagEnd = positionAfter(html, ">", start);
  const isEndTag = match[1] === "/";
  const name = (match[2] ?? "").toLowerCase();
  if (!isEndTag && HIDDEN_ELEMENTS.has(name)) {
    return skipElementContent(html, name, tagEnd);
  }

  builder.handleTag(name, isEndTag);
  return tagEnd;
}

/** Returns the position after the next `text` from `from`, or the end. */
function positionAfter(html: string, text: string, from: number): number {
  const found = html.indexOf(text, from);
  return found < 0 ? html.length : found + text.length;
}

/** Returns the position after the end tag of `name`, or the end. */
function skipElementContent(html: string, name: string, from: number): number {
  const endTag = new RegExp(`</${name}\\b`, "ig");
  endTag.lastIndex = from;
  const found = endTag.exec(html);
  return found === null ? html.length : positionAfter(html, ">", found.index);
}

/** Collects the lines of text that htmlToText produces. */
class PlainTextBuilder {
  #lines: string[] = [];
  #line = "";
  #spacePending = false;
  #preDepth = 0;

  addText(html: string): void {
    if (html === "") return;
    if (this.#preDepth > 0) {
      this.#addPreformatted(html);
      return;
    }

    let text = html.replace(/[\t\n\f\r ]+/g, " ");
    if (text.startsWith(" ")) {
      this.#spacePending = true;
      text = text.slice(1);
    }
    if (text === "") return;

    const endsWithSpace = text.endsWith(" ");
    if (endsWithSpace) text = text.slice(0, -1);
    if (this.#spacePending && this.#line !== "") this.#line += " ";
    this.#line += decodeHtmlEntities(text);
    this.#spacePending = endsWithSpace;
  }

  handleTag(name: string, isEndTag: boolean): void {
    if (name === "br") {
      this.#endLine();
    } else if (BLOCK_ELEMENTS.has(name)) {
      if (this.#line !== "") this.#endLine();
      this.#spacePending = false;
      if (name === "pre") {
        this.#preDepth = Math.max(0, this.#preDepth + (isEndTag ? -1 : 1));
      }
    } else if (CELL_ELEMENTS.has(name)) {
      this.#spacePending = true;
    }
  }

  /** Returns the lines joined with LF, without leading or trailing empty lines. */
  toString(): string {
    const lines = [...this.#lines, this.#line];
    let first = 0;
    let last = lines.length;
    while (first < last && lines[first] === "") first++;
    while (last > first && lines[last - 1] === "") last--;
    return lines.slice(first, last).join("\n");
  }

  #addPreformatted(html: string): void {
    const lines = decodeHtmlEntities(html).replace(/\r\n?/g, "\n").split("\n");
    lines.forEach((line, index) => {
      if (index > 0) this.#endLine();
      if (this.#spacePending && this.#line !== "") this.#line += " ";
      this.#spacePending = false;
      this.#line += line;
    });
  }

  #endLine(): void {
    this.#lines.push(this.#line);
    this.#line = "";
    this.#spacePending = false;
  }
}

/** HTML 4 Latin-1 entity names, for U+00A0 to U+00FF in order. */
const LATIN1_ENTITY_NAMES = (
  "nbsp iexcl cent pound curren yen brvbar sect uml copy ordf laquo not " +
  "shy reg macr deg plusmn sup2 sup3 acute micro para middot cedil sup1 " +
  "ordm raquo frac14 frac12 frac34 iquest Agrave Aacute Acirc Atilde Auml " +
  "Aring AElig Ccedil Egrave Eacute Ecirc Euml Igrave Iacute Icirc Iuml " +
  "ETH Ntilde Ograve Oacute Ocirc Otilde Ouml times Oslash Ugrave Uacute " +
  "Ucirc Uuml Yacute THORN szlig agrave aacute acirc atilde auml aring " +
  "aelig ccedil egrave eacute ecirc euml igrave iacute icirc iuml eth " +
  "ntilde ograve oacute ocirc otilde ouml divide oslash ugrave uacute " +
  "ucirc uuml yacute thorn yuml"
).split(" ");

/**
 * Named character references: the XML five, HTML 4 Latin-1 and the
 * punctuation and symbols that mail commonly uses.
 */
const NAMED_ENTITIES: ReadonlyMap<string, string> = new Map([
  ...LATIN1_ENTITY_NAMES.map((name, index): [string, string] => [
    name,
    String.fromCharCode(0xa0 + index),
  ]),
  ...Object.entries({
    amp: "&",
    lt: "<",
    gt: ">",
    quot: '"',
    apos: "'",
    OElig: "\u0152",
    oelig: "\u0153",
    Scaron: "\u0160",
    scaron: "\u0161",
    Yuml: "\u0178",
    fnof: "\u0192",
    circ: "\u02c6",
    tilde: "\u02dc",
    ensp: "\u2002",
    emsp: "\u2003",
    thinsp: "\u2009",
    zwnj: "\u200c",
    zwj: "\u200d",
    lrm: "\u200e",
    rlm: "\u200f",
    ndash: "\u2013",
    mdash: "\u2014",
    lsquo: "\u2018",
    rsquo: "\u2019",
    sbquo: "\u201a",
    ldquo: "\u201c",
    rdquo: "\u201d",
    bdquo: "\u201e",
    dagger: "\u2020",
    Dagger: "\u2021",
    bull: "\u2022",
    hellip: "\u2026",
    permil: "\u2030",
    prime: "\u2032",
    Prime: "\u2033",
    lsaquo: "\u2039",
    rsaquo: "\u203a",
    oline: "\u203e",
    euro: "\u20ac",
    trade: "\u2122",
    larr: "\u2190",
    uarr: "\u2191",
    rarr: "\u2192",
    darr: "\u2193",
    harr: "\u2194",
    minus: "\u2212",
  }),
]);

const CHARACTER_REFERENCE =
  /&(?:#(\d+)|#[xX]([0-9a-fA-F]+)|([A-Za-z]\w*))(;?)/g;

const windows1252 = new TextDecoder("windows-1252");

/**
 * Decodes character references. A named one needs its ";", a numeric one
 * does not.
 */
function decodeHtmlEntities(text: string): string {
  if (!text.includes("&")) return text;

  // NOTE: named references outside NAMED_ENTITIES (Greek letters, math
  // symbols and the rest of the HTML5 list) stay as written.
  return text.replace(
    CHARACTER_REFERENCE,
    (reference, decimal, hex, name, semicolon) => {
      if (decimal !== undefined) return decodeCodePoint(parseInt(decimal, 10));
      if (hex !== undefined) return decodeCodePoint(parseInt(hex, 16));
      if (semicolon !== ";") return reference;
      return NAMED_ENTITIES.get(name) ?? reference;
    },
  );
}

/**
 * Decodes a numeric character reference. NUL, surrogates and values past
 * U+10FFFF become U+FFFD, and 0x80 to 0x9F are read as windows-1252 bytes.
 */
function decodeCodePoint(codePoint: number): string {
  const isSurrogate = codePoint >= 0xd800 && codePoint <= 0xdfff;
  if (codePoint === 0 || codePoint > 0x10ffff || isSurrogate) return "\ufffd";
  if (codePoint >= 0x80 && codePoint <= 0x9f) {
    return windows1252.decode(Uint8Array.of(codePoint));
  }
  return String.fromCodePoint(codePoint);
}
