// The policy editor of /policies/edit: CodeMirror 6 (@uiw/react-codemirror) with line numbers, YAML
// highlighting and the kernel's problems in the gutter. It owns its text: Reflex gives it a document
// (`source`) each time `revision` changes (a version was loaded) and hears the text back `delay` ms
// after the typing stops, never per keystroke (a round trip per key would fight the cursor).
import React, { useEffect, useRef, useState } from "react";
import CodeMirror from "@uiw/react-codemirror";
import { yaml } from "@codemirror/lang-yaml";
import { lintGutter, setDiagnostics } from "@codemirror/lint";
import { EditorView } from "@codemirror/view";

const views = {}; // editor id -> its EditorView, for `licetEditor.jump`

// Offset of 1-based (line, column) in `doc`, clamped to the document (problems may be a keystroke old).
function offset(doc, line, column) {
  const found = doc.line(Math.min(Math.max(line || 1, 1), doc.lines));
  return Math.min(found.from + Math.max((column || 1) - 1, 0), found.to);
}

if (typeof window !== "undefined") {
  window.licetEditor = {
    // Put the cursor at (line, column) of editor `id` and show it (the problem list's buttons).
    jump(id, line, column) {
      const view = views[id];
      if (!view) return false;
      const at = offset(view.state.doc, line, column);
      view.dispatch({ selection: { anchor: at }, effects: EditorView.scrollIntoView(at, { y: "center" }) });
      view.focus();
      return true;
    },
    // The cursor's 1-based line and column (tests read it).
    cursor(id) {
      const view = views[id];
      if (!view) return null;
      const head = view.state.selection.main.head;
      const line = view.state.doc.lineAt(head);
      return { line: line.number, column: head - line.from + 1 };
    },
  };
}

export default function PolicyEditor({ id, source, revision, problems, onChange, delay, label, height }) {
  const [view, setView] = useState(null);
  const timer = useRef(null);
  const latest = useRef(onChange);
  latest.current = onChange;

  useEffect(() => {
    if (!view) return undefined;
    views[id] = view;
    return () => { if (views[id] === view) delete views[id]; };
  }, [id, view]);
  useEffect(() => () => clearTimeout(timer.current), []);

  // The problems Reflex holds, as CodeMirror diagnostics (gutter markers, underlines, tooltips).
  useEffect(() => {
    if (!view) return;
    const doc = view.state.doc;
    const diagnostics = (problems || []).map((p) => {
      const from = offset(doc, p.line, p.column);
      const to = Math.max(from, Math.min(doc.lineAt(from).to, from + 1));
      return { from, to, severity: p.severity === "error" ? "error" : "warning", message: p.message };
    });
    view.dispatch(setDiagnostics(view.state, diagnostics));
  }, [view, problems]);

  const changed = (text) => {
    clearTimeout(timer.current);
    timer.current = setTimeout(() => latest.current && latest.current(text), delay ?? 300);
  };

  return (
    <CodeMirror
      key={revision}
      value={source}
      height={height || "480px"}
      basicSetup={{ lineNumbers: true, foldGutter: false, highlightActiveLine: true, autocompletion: false }}
      extensions={[
        yaml(),
        lintGutter(),
        EditorView.lineWrapping,
        // An explicit tabindex: the editable text is the scroller's focusable content for checkers too (axe).
        EditorView.contentAttributes.of({ "aria-label": label || "Policy document", id: `${id}-content`, tabindex: "0" }),
      ]}
      onCreateEditor={(created) => setView(created)}
      onChange={changed}
      id={id}
      style={{ border: "1px solid var(--gray-a7)", borderRadius: "var(--radius-2)", fontSize: "13px" }}
    />
  );
}
