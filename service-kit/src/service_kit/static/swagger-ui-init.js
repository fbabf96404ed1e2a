// Starts Swagger UI on the docs page (service-kit/docs.py). A file rather than FastAPI's
// inline <script>, so the gateway's CSP for the page can be script-src 'self'; the page tells
// it where the OpenAPI document is (under the gateway's prefix) in a data attribute.
"use strict";
(() => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    // FastAPI's defaults for its own page.
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    // The online validator badge would fetch an image from validator.swagger.io: no request
    // of this page may leave the gateway.
    validatorUrl: null,
  });
})();
