// The function app on the Flex Consumption plan (FC1, Linux, Python of the version given). The
// runtime and scale are in functionAppConfig (no FUNCTIONS_WORKER_RUNTIME or
// FUNCTIONS_EXTENSION_VERSION settings on Flex); the deployment package goes to a
// blob container read with the user-assigned identity. App settings are applied by
// appsettings.bicep, once the host name and the other resources exist.

param location string

@description('Tags of the plan and the site.')
param tags object = {}

@description('Tags of the site only, such as azd-service-name, which must name one resource.')
param siteTags object = {}

param planName string
param name string

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('URL of the blob container that holds the deployment package.')
param deploymentContainerUrl string

@minValue(1)
@maxValue(1000)
@description('Most instances per scale group (HTTP functions together, each other function alone), not per app.')
param maximumInstanceCount int = 100

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Python version of the runtime; main.bicep limits it to the versions the project is tested on.')
param pythonVersion string

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, siteTags)
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
