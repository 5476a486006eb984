/** RFC 5322 date-time: parsing the Date header, formatting Received:. */

const MONTH_NAMES = [
  "Jan",
  "Feb",
  "Mar",
  "Apr",
  "May",
  "Jun",
  "Jul",
  "Aug",
  "Sep",
  "Oct",
  "Nov",
  "Dec",
] as const;

const DAY_NAMES = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"] as const;

/** Formats an RFC 5322 3.3 date-time in UTC: `Mon, 01 Jan 2024 09:30:00 +0000`. */
export function formatDateTime(date: Date): string {
  const pad = (value: number): string => String(value).padStart(2, "0");
  const dayName = DAY_NAMES[date.getUTCDay()];
  const day = pad(date.getUTCDate());
  const month = MONTH_NAMES[date.getUTCMonth()];
  const year = String(date.getUTCFullYear()).padStart(4, "0");
  const time = [date.getUTCHours(), date.getUTCMinutes(), date.getUTCSeconds()]
    .map(pad)
    .join(":");
  return `${dayName}, ${day} ${month} ${year} ${time} +0000`;
}

/**
 * RFC 5322 3.3 and 4.3 date-time, after comments are removed: optional
 * day-of-week, day, month name, year of 2 to 4 digits, hh:mm[:ss], and an
 * optional zone.
 */
const DATE_TIME_PATTERN = new RegExp(
  "^(?:([a-z]{3})\\s*,\\s*)?" + // day-of-week
    "(\\d{1,2})\\s+([a-z]{3})\\s+(\\d{2,4})\\s+" + // day month year
    "(\\d{1,2})\\s*:\\s*(\\d{2})(?:\\s*:\\s*(\\d{2}))?" + // hh:mm[:ss]
    "(?:\\s*([+-]\\d{4}|[a-z]{1,5}))?$", // zone
  "i",
);

/** RFC 5322 4.3 obsolete zone names, as minutes east of UTC. */
const ZONE_OFFSETS: Readonly<Record<string, number>> = {
  ut: 0,
  gmt: 0,
  edt: -4 * 60,
  est: -5 * 60,
  cdt: -5 * 60,
  cst: -6 * 60,
  mdt: -6 * 60,
  mst: -7 * 60,
  pdt: -7 * 60,
  pst: -8 * 60,
};

/** Parses an RFC 5322 date-time, or returns null when the value is not one. */
export function parseDateTime(value: string): Date | null {
  const text = removeComments(value);
  const match = text === null ? null : DATE_TIME_PATTERN.exec(text.trim());
  if (match === null) return null;

  const [, dayName, day, monthName, year, hour, minute, second, zone] = match;
  if (dayName !== undefined && !isDayName(dayName)) return null;

  const month = MONTH_NAMES.findIndex((name) =>
    name.toLowerCase() === monthName?.toLowerCase()
  );
  const fullYear = expandYear(year ?? "");
  const offset = parseZone(zone);
  const fields = {
    year: fullYear,
    month,
    day: Number(day),
    hour: Number(hour),
    minute: Number(minute),
    second: Number(second ?? "0"),
  };
  if (offset === null || !isValidDateTime(fields)) return null;

  const utc = Date.UTC(
    fields.year,
    fields.month,
    fields.day,
    fields.hour,
    fields.minute,
    fields.second,
  );
  return new Date(utc - offset * 60_000);
}

function isDayName(name: string): boolean {
  return DAY_NAMES.some((day) => day.toLowerCase() === name.toLowerCase());
}

/**
 * Expands an obsolete year (RFC 5322 4.3): 2000 is added to a 2-digit year
 * below 50, and 1900 to one of 50 or more and to any 3-digit year.
 */
function expandYear(digits: string): number {
  const year = Number(digits);
  if (digits.length === 2) return year < 50 ? 2000 + year : 1900 + year;
  if (digits.length === 3) return 1900 + year;
  return year;
}

/**
 * Returns the zone as minutes east of UTC, or null when it is invalid. No
 * zone is taken as UTC. Military letters and other unknown names count as
 * "-0000" (RFC 5322 4.3), which gives the time in UTC.
 */
function parseZone(zone: string | undefined): number | null {
  if (zone === undefined) return 0;

  const numeric = /^([+-])(\d{2})(\d{2})$/.exec(zone);
  if (numeric === null) return ZONE_OFFSETS[zone.toLowerCase()] ?? 0;

  const [, sign, hours, minutes] = numeric;
  if (Number(minutes) > 59) return null;
  const offset = Number(hours) * 60 + Number(minutes);
  return sign === "-" ? -offset : offset;
}

interface DateTimeFields {
  readonly year: number;
  readonly month: number;
  readonly day: number;
  readonly hour: number;
  readonly minute: number;
  readonly second: number;
}

/**
 * Checks the ranges of RFC 5322 3.3. A leap second (60) is allowed, and
 * Date.UTC carries it into the next minute.
 */
function isValidDateTime(fields: DateTimeFields): boolean {
  // RFC 5322 3.3: the year is 1900 or later.
  if (fields.month < 0 || fields.year < 1900) return false;

  const daysInMonth = new Date(Date.UTC(fields.year, fields.month + 1, 0))
    .getUTCDate();
  return fields.day >= 1 && fields.day <= daysInMonth &&
    fields.hour <= 23 && fields.minute <= 59 && fields.second <= 60;
}

/**
 * Replaces each RFC 5322 3.2.2 comment, nested ones included, with a space.
 * Returns null when a parenthesis is left open.
 */
function removeComments(value: string): string | null {
  let result = "";
  let depth = 0;
  for (let i = 0; i < value.length; i++) {
    const char = value[i];
    if (depth > 0 && char === "\\") {
      i++;
    } else if (char === "(") {
      depth++;
    } else if (char === ")" && depth > 0) {
      depth--;
      if (depth === 0) result += " ";
    } else if (depth === 0) {
      result += char;
    }
  }
  return depth === 0 ? result : null;
}
