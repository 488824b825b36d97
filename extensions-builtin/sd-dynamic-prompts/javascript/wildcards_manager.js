// Dynamic Prompts' Wildcards Manager tab (sddp_wildcards/tab.py). The wildcard tree is HTML made by the server: a
// click on a wildcard puts its name where the tab's hidden select button reads it (that button's js), and clicks
// the button, whose Python handler loads the wildcard into the editor. The two Delete buttons ask first.
document.addEventListener("click", function (event) {
    if (!event.target || !event.target.closest) return;
    // opening the tab reads the folder again (the original refreshes its tree on every tab change)
    const tabButton = event.target.closest("button[role='tab']");
    if (tabButton && (tabButton.id === "tab_sddp-wildcard-manager-button" ||
                      tabButton.textContent.trim() === "Wildcards Manager")) {
        const refresh = document.getElementById("sddp-wildcard-load-tree-button");
        if (refresh) refresh.click();
        return;
    }
    const item = event.target.closest("#sddp-wildcard-tree .sddp-wildcard");
    if (!item) return;
    event.preventDefault();
    window.sddpWildcardSelection = item.dataset.name || "";
    document.querySelectorAll("#sddp-wildcard-tree .sddp-wildcard.selected").forEach(function (e) {
        e.classList.remove("selected");
    });
    item.classList.add("selected");
    const button = document.getElementById("sddp-wildcard-select-button");
    if (button) button.click();
});

function sddpConfirmDelete(file, key) {
    if (!file) return false;
    return confirm(key ? "Delete the key " + key + " from " + file + "?" : "Delete the wildcard file " + file + "?");
}

function sddpConfirmDeleteAll() {
    return confirm("Delete every wildcard file (.txt, .yaml, .json) in the wildcards folder?");
}
