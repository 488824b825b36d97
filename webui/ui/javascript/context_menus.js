// A1111's javascript/contextMenus.js, the part users rely on: right-click on Generate (txt2img, img2img) opens a
// menu with "Generate forever" and "Cancel generate forever". While on, Generate is clicked again whenever the
// previous job has finished (the Interrupt button is hidden), every 500 ms, as A1111 does.
(function () {
    const tabs = ["txt2img", "img2img"];
    let menu = null;
    const repeat = {};

    function button(id) {
        return document.getElementById(id);
    }

    function idle(tab) {
        const interrupt = button(tab + "_interrupt");
        return !interrupt || interrupt.offsetParent === null;
    }

    function startForever(tab) {
        stopForever(tab);
        const generate = button(tab + "_generate");
        if (generate && idle(tab)) generate.click();
        repeat[tab] = setInterval(function () {
            const g = button(tab + "_generate");
            if (g && idle(tab)) g.click();
        }, 500);
        document.body.dataset["generateForever_" + tab] = "on";
    }

    function stopForever(tab) {
        if (repeat[tab]) clearInterval(repeat[tab]);
        delete repeat[tab];
        delete document.body.dataset["generateForever_" + tab];
    }

    function hideMenu() {
        if (menu) menu.remove();
        menu = null;
    }

    function showMenu(tab, x, y) {
        hideMenu();
        menu = document.createElement("nav");
        menu.id = "context-menu";
        menu.className = "webui-context-menu";
        menu.style.left = x + "px";
        menu.style.top = y + "px";
        const list = document.createElement("ul");
        [["Generate forever", function () { startForever(tab); }],
         ["Cancel generate forever", function () { stopForever(tab); }]].forEach(function (entry) {
            const item = document.createElement("li");
            item.textContent = entry[0];
            item.addEventListener("click", function (e) {
                e.stopPropagation();
                hideMenu();
                entry[1]();
            });
            list.appendChild(item);
        });
        menu.appendChild(list);
        document.body.appendChild(menu);
    }

    document.addEventListener("contextmenu", function (e) {
        for (const tab of tabs) {
            const generate = button(tab + "_generate");
            if (generate && generate.contains(e.target)) {
                e.preventDefault();
                showMenu(tab, e.pageX, e.pageY);
                return;
            }
        }
        hideMenu();
    });
    // Only a user's click closes the menu: the clicks Generate forever itself sends to Generate (untrusted events)
    // must not, or the menu vanishes under the pointer while the loop runs.
    document.addEventListener("click", function (e) {
        if (e.isTrusted) hideMenu();
    });
})();
