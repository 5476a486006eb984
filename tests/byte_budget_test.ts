import assert from "node:assert/strict";
import { ByteBudget } from "../src/byte_budget.ts";

Deno.test("ByteBudget reservations share the capacity", () => {
  const budget = new ByteBudget(100);
  const first = budget.open();
  const second = budget.open();
  assert.equal(first.grow(60), true);
  assert.equal(second.grow(50), false);
  assert.equal(second.grow(40), true);
  assert.equal(budget.used, 100);
  first.release();
  assert.equal(budget.used, 40);
  assert.equal(second.grow(60), true);
  second.release();
  second.release();
  assert.equal(budget.used, 0);
});
