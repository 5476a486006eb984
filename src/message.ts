/**
 * The trace headers prepended to each message, and the fields extracted
 * from it for the `messages` table.
 */

/** What the `Return-Path:` and `Received:` headers record. */
export interface TraceContext {
  readonly reversePath: string;
  readonly forwardPaths: readonly string[];
  readonly heloName: string;
  readonly clientAddress: string;
  readonly hostname: string;
  /** RFC 3848 protocol name: "SMTP" after HELO, "ESMTP" after EHLO, "ESMTPS" over TLS. */
  readonly protocol: string;
  readonly receivedAt: Date;
  /** Identifies the mail transaction in the Received: header and logs. */
  readonly transactionId: string;
}

/** Subject, Date and text body of a message. */
export interface ExtractedFields {
  readonly subject: string;
  readonly date: Date | null;
  readonly body: string;
}

/** Builds `Return-Path:` and `Received:` as CRLF-ended header lines. */
export function buildTraceHeaders(_context: TraceContext): Uint8Array {
  throw new Error("not implemented");
}

/** Extracts Subject, Date and text body; never throws on malformed mail. */
export function extractFields(_data: Uint8Array): Promise<ExtractedFields> {
  throw new Error("not implemented");
}
