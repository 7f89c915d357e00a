import { createRoot } from "react-dom/client";
import { App } from "./App";
import "./styles.css";

// No <StrictMode>: in development it mounts every component twice, and useChat would resume a reply twice.
createRoot(document.getElementById("root")!).render(<App />);
