// Extra Networks card clicks (A1111's javascript/extraNetworks.js cardClicked / extraNetworksEditUserMetadata): the
// card's page and file go to the tab's hidden action button, whose Python handler toggles the card's text in the
// prompt, selects the checkpoint, or opens the metadata editor.
function webuiExtraNetworkCard(event, card, tab, what) {
    event.stopPropagation();
    event.preventDefault();
    window.webuiExtraNetworkAction = JSON.stringify({action: what, page: card.dataset.page,
                                                     filename: card.dataset.filename});
    const button = document.getElementById(tab + "_extra_networks_action_button");
    if (button) button.click();
}

// A folder button (A1111's directory buttons): show that folder's cards (and its sub-folders').
function webuiExtraNetworkFolder(event, button, tab) {
    event.stopPropagation();
    event.preventDefault();
    window.webuiExtraNetworkAction = JSON.stringify({action: "folder", folder: button.dataset.folder});
    const target = document.getElementById(tab + "_extra_networks_action_button");
    if (target) target.click();
}
