// Loads docs/asyncapi.yaml (the wire schema) for the tests: validators for control messages and
// the binary layouts described in its tables.
import Ajv from "ajv";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
export const doc = parse(readFileSync(join(here, "..", "..", "..", "docs", "asyncapi.yaml"), "utf8"));

const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addSchema(doc, "asyncapi");

/** A validator for `components.schemas[name]`; returns [ok, errors]. */
export function validator(name) {
  const v = ajv.getSchema(`asyncapi#/components/schemas/${name}`);
  if (!v) throw new Error(`no schema ${name}`);
  return (msg) => [v(msg), v.errors];
}

/** The message names of an operation, e.g. "receiveControl" → ["start", …]. */
export function operationMessages(op) {
  return doc.operations[op].messages.map((m) => m.$ref.split("/").pop());
}

/** Rows of the markdown table in a message's description: {offset, size, type, field}. */
export function layoutTable(messageName) {
  const text = doc.components.messages[messageName].description;
  const rows = [];
  for (const line of text.split("\n")) {
    const cells = line.split("|").map((c) => c.trim()).filter(Boolean);
    if (cells.length >= 4 && /^\d+$/.test(cells[0])) {
      rows.push({ offset: Number(cells[0]), size: cells[1], type: cells[2], field: cells[3] });
    }
  }
  return rows;
}

/** Read a field of a table row from a DataView, by its declared type. */
export function readField(dv, row, base = 0) {
  const o = base + row.offset;
  switch (row.type) {
    case "u8": return dv.getUint8(o);
    case "u16": return dv.getUint16(o, true);
    case "u32": return dv.getUint32(o, true);
    case "i32": return dv.getInt32(o, true);
    case "f64": return dv.getFloat64(o, true);
    case "bytes": return String.fromCharCode(dv.getUint8(o), dv.getUint8(o + 1));
    default: return null;
  }
}
