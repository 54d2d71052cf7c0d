// tunesmith console: keyboard shortcuts and client-side sorting of small tables. No libraries.
(function () {
  "use strict";

  function typing(event) {
    const tag = (event.target.tagName || "").toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || event.target.isContentEditable;
  }

  // Shortcuts: any element with data-key="x" is clicked (links followed, buttons pressed) on key x;
  // data-focus-key="/" focuses that field. Keys typed into a field are left to the field, except
  // Enter on an element marked data-submit-on-enter.
  document.addEventListener("keydown", function (event) {
    const form = document.querySelector("form[data-submit-on-enter]");
    if (form && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {  // from any field
      event.preventDefault(); form.requestSubmit(); return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event)) return;
    if (form && event.key === "Enter") { event.preventDefault(); form.requestSubmit(); return; }
    if (/^[1-5]$/.test(event.key) && scoreNext(event.key)) { event.preventDefault(); return; }
    const focus = document.querySelector('[data-focus-key="' + CSS.escape(event.key) + '"]');
    if (focus) { event.preventDefault(); focus.focus(); return; }
    const target = document.querySelector('[data-key="' + CSS.escape(event.key) + '"]');
    if (!target) return;
    event.preventDefault();
    if (target.type === "radio" || target.type === "checkbox") {
      target.checked = true;
      target.dispatchEvent(new Event("change", { bubbles: true }));
    } else {
      target.click();
    }
  });

  // Rubric: keys 1-5 score the first criterion without a score (then the last one, to correct it).
  function scoreNext(key) {
    const criteria = Array.from(document.querySelectorAll("fieldset.criterion"));
    if (!criteria.length) return false;
    const open = criteria.find(function (c) { return !c.querySelector("input:checked"); }) || criteria[criteria.length - 1];
    const input = open.querySelector('input[value="' + key + '"]');
    if (!input) return false;
    input.checked = true;
    input.dispatchEvent(new Event("change", { bubbles: true }));
    return true;
  }

  // Tables with class "sortable": click a header to sort by that column (numbers as numbers).
  function cellValue(row, index) {
    const text = (row.cells[index] ? row.cells[index].textContent : "").trim();
    const number = parseFloat(text.replace(/,/g, ""));
    return isNaN(number) ? text.toLowerCase() : number;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (header, index) {
      header.style.cursor = "pointer";
      header.addEventListener("click", function () {
        const body = table.tBodies[0];
        const ascending = header.dataset.sorted !== "asc";
        table.querySelectorAll("thead th").forEach(function (h) { delete h.dataset.sorted; });
        header.dataset.sorted = ascending ? "asc" : "desc";
        Array.from(body.rows)
          .sort(function (a, b) {
            const x = cellValue(a, index), y = cellValue(b, index);
            return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
          })
          .forEach(function (row) { body.appendChild(row); });
      });
    });
  });

  // Toggles: <input data-toggle="same"> shows the config-diff rows whose values are equal.
  document.querySelectorAll("[data-toggle=same]").forEach(function (box) {
    box.addEventListener("change", function () {
      document.getElementById("config-diff").classList.toggle("show-same", box.checked);
    });
  });
})();
