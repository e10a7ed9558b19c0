// The list of listeners (generic + enrolled), shared by the live, personality and offline panels.

import { listListeners } from "./api.js";
import { $ } from "./dom.js";

export class ListenerList extends EventTarget {
  constructor() {
    super();
    this.items = [];
    this.error = null;
  }

  async refresh(select = null) {
    try {
      const data = await listListeners();
      this.items = data.listeners;
      this.error = null;
    } catch (err) {
      this.error = err;
    }
    this.fill($("listener"), true, select);
    this.fill($("personality-listener"), false, select);
    this.dispatchEvent(new CustomEvent("change", { detail: { error: this.error } }));
    return this.items;
  }

  fill(sel, withGeneric, select) {
    const keep = select || sel.value;
    sel.replaceChildren();
    if (withGeneric) sel.append(new Option("generic", "generic"));
    for (const l of this.items) sel.append(new Option(`${l.name} (${l.id.slice(0, 8)})`, l.id));
    if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  }
}
