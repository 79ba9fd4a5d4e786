// A plain reader for /openapi.json: FastAPI's Swagger UI needs a CDN, this page must work offline.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([key, value]) => { node[key] = value; });
  children.forEach((child) => node.append(child));
  return node;
}

function resolve(spec, schema) {
  let seen = 0;
  while (schema && schema.$ref && seen++ < 20) {
    schema = schema.$ref.replace(/^#\//, "").split("/").reduce((node, key) => node[key], spec);
  }
  return schema || {};
}

function typeOf(spec, schema) {
  schema = resolve(spec, schema);
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.anyOf) return schema.anyOf.map((s) => typeOf(spec, s)).join(" | ");
  if (schema.type === "array") return `${typeOf(spec, schema.items)}[]`;
  if (schema.format === "binary" || schema.contentMediaType) return "file";
  return schema.title && !schema.type ? schema.title : (schema.type || "object");
}

function fieldTable(spec, schema) {
  schema = resolve(spec, schema);
  const required = new Set(schema.required || []);
  const rows = Object.entries(schema.properties || {}).map(([name, prop]) => {
    const p = resolve(spec, prop);
    return el("tr", {}, el("td", { textContent: name + (required.has(name) ? " *" : "") }),
      el("td", { textContent: typeOf(spec, prop) }), el("td", { textContent: p.description || prop.description || "" }));
  });
  if (!rows.length) return el("p", { className: "muted", textContent: typeOf(spec, schema) });
  return el("table", {}, el("tr", {}, el("th", { textContent: "field" }), el("th", { textContent: "type" }),
    el("th", { textContent: "about" })), ...rows);
}

function endpoint(spec, path, method, op) {
  const box = el("section", { className: "panel endpoint" });
  box.append(el("h3", {}, el("span", { className: `method ${method}`, textContent: method.toUpperCase() }), path));
  if (op.description || op.summary) box.append(el("p", { textContent: op.description || op.summary }));
  const params = op.parameters || [];
  if (params.length) {
    box.append(el("h4", { textContent: "Query parameters" }));
    box.append(el("table", {}, ...params.map((p) => el("tr", {}, el("td", { textContent: p.name }),
      el("td", { textContent: typeOf(spec, p.schema) }), el("td", { textContent: p.description || "" })))));
  }
  const body = op.requestBody && op.requestBody.content;
  if (body) {
    const [type, media] = Object.entries(body)[0];
    box.append(el("h4", { textContent: `Request body (${type})` }), fieldTable(spec, media.schema));
  }
  Object.entries(op.responses || {}).forEach(([status, response]) => {
    const content = response.content || {};
    const json = content["application/json"];
    box.append(el("h4", { textContent: `${status}: ${response.description || ""}` }));
    if (json && json.schema) box.append(fieldTable(spec, json.schema));
  });
  return box;
}

async function main() {
  const target = document.getElementById("endpoints");
  try {
    const spec = await (await fetch("/openapi.json")).json();
    target.textContent = "";
    Object.entries(spec.paths).forEach(([path, ops]) => {
      Object.entries(ops).forEach(([method, op]) => target.append(endpoint(spec, path, method, op)));
    });
  } catch (err) {
    target.textContent = `could not load /openapi.json: ${err.message}`;
  }
}

document.addEventListener("DOMContentLoaded", main);
