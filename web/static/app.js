// Embedded, no framework, no CDN. Only conveniences: the form works without it.
(function () {
  var proxy = document.getElementById('proxy-enabled');
  var fields = document.getElementById('proxy-fields');
  if (proxy && fields) {
    var sync = function () { fields.style.display = proxy.checked ? '' : 'none'; };
    proxy.addEventListener('change', sync);
    sync();
  }
  // Choosing a photo marks the material as photographed.
  var inputs = document.querySelectorAll('input[type=file][name^="photo."]');
  for (var i = 0; i < inputs.length; i++) {
    inputs[i].addEventListener('change', function (e) {
      var key = e.target.name.slice('photo.'.length);
      var select = document.getElementById('material.' + key);
      if (select && e.target.files.length && !select.value) { select.value = 'photo'; }
    });
  }
  // Lower-case x in an ID number is accepted; show it normalised as the clerk types.
  var ids = document.querySelectorAll('input[name$="id_number"]');
  for (var j = 0; j < ids.length; j++) {
    ids[j].addEventListener('blur', function (e) { e.target.value = e.target.value.trim().toUpperCase(); });
  }
})();
