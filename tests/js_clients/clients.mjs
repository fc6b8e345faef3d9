// Real JavaScript clients against rag-async's /v1, as their users write them: the official
// `openai` SDK for Node and the Vercel AI SDK (`ai` with `@ai-sdk/openai`). Each flow prints
// what it saw as one JSON object on stdout; tests/test_js_clients.py judges it.
//
//   node clients.mjs BASE_URL API_KEY QUESTION FOLLOW_UP
import OpenAI from "openai";
import { createOpenAI } from "@ai-sdk/openai";
import { streamText } from "ai";

const [baseURL, apiKey, question, followUp] = process.argv.slice(2);

async function nodeSdkResponses() {
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
  const seen = { text: "", annotations: 0, usage: null, types: new Set() };
  const stream = await client.responses.create({ model: "rag-async", input: question, stream: true });
  let responseId = null;
  for await (const event of stream) {
    seen.types.add(event.type);
    if (event.type === "response.output_text.delta") seen.text += event.delta;
    if (event.type === "response.output_text.annotation.added") seen.annotations += 1;
    if (event.type === "response.completed") {
      responseId = event.response.id;
      seen.usage = event.response.usage;
    }
  }
  const next = await client.responses.create({
    model: "rag-async",
    input: followUp,
    previous_response_id: responseId,
  });
  return {
    text: seen.text,
    annotations: seen.annotations,
    usage: seen.usage,
    eventTypes: [...seen.types],
    followUp: { status: next.status, text: next.output_text, usage: next.usage },
  };
}

async function nodeSdkChat() {
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
  const stream = await client.chat.completions.create({
    model: "rag-async",
    messages: [{ role: "user", content: question }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let usage = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    if (chunk.usage) usage = chunk.usage;
  }
  return { text, usage };
}

// The AI SDK's default provider model speaks the Responses API with `store` on: a second turn
// sends the first answer back as an `item_reference` to the stored message.
async function vercelMultiTurn() {
  const provider = createOpenAI({ baseURL, apiKey });
  const model = provider("rag-async");
  const errors = [];
  const onError = ({ error }) => errors.push(String(error?.message ?? error));
  const first = streamText({ model, prompt: question, maxRetries: 0, onError });
  const firstText = await first.text.catch((error) => {
    throw new Error(`${error.message}: ${errors.join("; ")}`);
  });
  const sources = await first.sources;
  const messages = [
    { role: "user", content: question },
    ...(await first.response).messages,
    { role: "user", content: followUp },
  ];
  const second = streamText({ model, messages, maxRetries: 0, onError });
  const secondText = await second.text.catch((error) => {
    throw new Error(`${error.message}: ${errors.join("; ")}`);
  });
  return {
    text: firstText,
    sources: sources.length,
    usage: await first.usage,
    followUp: { text: secondText, sources: (await second.sources).length },
  };
}

async function run(name, flow) {
  try {
    return [name, { ok: true, ...(await flow()) }];
  } catch (error) {
    return [name, { ok: false, error: String(error?.message ?? error) }];
  }
}

const results = Object.fromEntries([
  await run("node_sdk_responses", nodeSdkResponses),
  await run("node_sdk_chat", nodeSdkChat),
  await run("vercel_multi_turn", vercelMultiTurn),
]);
process.stdout.write(JSON.stringify(results) + "\n");
