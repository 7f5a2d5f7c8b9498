// Voice input: record with the microphone, send the audio to `POST /api/transcribe` (which the
// server forwards to the configured OpenAI-compatible endpoint) and hand back the text. Hidden,
// with a note that says why, when no transcription endpoint is configured.
import { api, request } from "./api.js";
import { h } from "./dom.js";

function pickMimeType() {
  if (!window.MediaRecorder) return null;
  for (const type of ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/mp4"]) {
    if (MediaRecorder.isTypeSupported(type)) return type;
  }
  return "";
}

export async function voiceInput(slot, note, onText) {
  let configured = false;
  try {
    configured = Boolean((await api.get("/api/transcribe")).configured);
  } catch {
    configured = false;
  }
  const mimeType = pickMimeType();
  if (!configured || mimeType === null || !navigator.mediaDevices) {
    note.textContent = configured
      ? "Voice input needs a browser that can record audio (and HTTPS or localhost)."
      : "Voice input is off: set a transcription endpoint in Settings to use it.";
    note.hidden = false;
    return;
  }
  let recorder = null;
  let chunks = [];
  const button = h(
    "button.icon-button.mic",
    { type: "button", "aria-label": "Record voice input", "aria-pressed": "false" },
    "●",
  );
  slot.append(button);

  async function start() {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch {
      note.textContent = "The microphone is not available (permission denied?).";
      note.hidden = false;
      return;
    }
    chunks = [];
    recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
    recorder.addEventListener("dataavailable", (event) => {
      if (event.data && event.data.size) chunks.push(event.data);
    });
    recorder.addEventListener("stop", async () => {
      stream.getTracks().forEach((track) => track.stop());
      const type = recorder.mimeType || mimeType || "audio/webm";
      const blob = new Blob(chunks, { type });
      const extension = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
      const form = new FormData();
      form.append("file", blob, `recording.${extension}`);
      button.disabled = true;
      note.textContent = "Transcribing…";
      note.hidden = false;
      try {
        const result = await request("POST", "/api/transcribe", form);
        note.hidden = true;
        if (result && result.text) onText(result.text.trim());
      } catch (error) {
        note.textContent = `Transcription failed: ${error.message}`;
      } finally {
        button.disabled = false;
      }
    });
    recorder.start();
    button.classList.add("recording");
    button.setAttribute("aria-pressed", "true");
    button.setAttribute("aria-label", "Stop recording");
  }

  button.addEventListener("click", () => {
    if (recorder && recorder.state === "recording") {
      recorder.stop();
      button.classList.remove("recording");
      button.setAttribute("aria-pressed", "false");
      button.setAttribute("aria-label", "Record voice input");
    } else {
      start();
    }
  });
}
