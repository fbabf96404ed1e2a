// Parse PromQL, LogQL and TraceQL expressions with the upstream Lezer grammars
// (@prometheus-io/lezer-promql: the grammar of Prometheus' own UI;
//  @grafana/lezer-logql: the grammar of Grafana's Loki query editor;
//  @grafana/lezer-traceql: the grammar of Grafana's Tempo query editor).
//
// Input (stdin): a JSON array of {"id": str, "lang": "promql" | "logql" | "traceql", "expr": str}.
// Output (stdout): a JSON array of {"id", "lang", "ok", "error", "metrics"} in the same
// order; "metrics" lists the metric names of the PromQL vector selectors (empty otherwise).
// Lezer parsers are error-tolerant: a syntax error does not throw, it leaves an
// error node in the tree, so "ok" means "the tree contains no error node".
// Exit status: 0 when every expression parses, 1 otherwise, 2 on bad input.
import { parser as promqlParser } from "@prometheus-io/lezer-promql";
import { parser as logqlParser } from "@grafana/lezer-logql";
import { parser as traceqlParser } from "@grafana/lezer-traceql";

const parsers = { promql: promqlParser, logql: logqlParser, traceql: traceqlParser };

function analyse(lang, expr) {
  const tree = parsers[lang].parse(expr);
  let error = null;
  const metrics = new Set();
  tree.iterate({
    enter(node) {
      if (error === null && node.type.isError) {
        const context = expr.slice(Math.max(0, node.from - 20), node.to + 20);
        error = `syntax error at offset ${node.from}: ...${context}...`;
      }
      if (lang === "promql" && node.name === "Identifier" && node.node.parent?.name === "VectorSelector") {
        metrics.add(expr.slice(node.from, node.to));
      }
    },
  });
  return { error, metrics: [...metrics].sort() };
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);

let items;
try {
  items = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  if (!Array.isArray(items)) throw new Error("expected a JSON array");
} catch (err) {
  console.error(`bad input: ${err.message}`);
  process.exit(2);
}

const results = items.map(({ id, lang, expr }) => {
  if (!parsers[lang]) return { id, lang, ok: false, error: `unknown language ${lang}`, metrics: [] };
  if (typeof expr !== "string" || expr.trim() === "") {
    return { id, lang, ok: false, error: "empty expression", metrics: [] };
  }
  const { error, metrics } = analyse(lang, expr);
  return { id, lang, ok: error === null, error, metrics };
});

process.stdout.write(JSON.stringify(results, null, 2) + "\n");
process.exit(results.every((r) => r.ok) ? 0 : 1);
